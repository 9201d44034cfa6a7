"""The agent's newest output lines, sent to its ticket while it runs (status query and Web UI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from temporalio import activity

from activities.redact import LineRedactor
from workflows.contracts import MAX_OUTPUT_LINES, AgentOutput

log = logging.getLogger("ticketflow.live_output")
SIGNAL = "agent_output"


class LiveOutput:
    """Collects lines; every `every` seconds, if they changed, signals them to the ticket's workflow.

    A signal per interval at most (not per line) keeps the ticket's history small; a failed signal
    is logged and never disturbs the agent.
    """

    def __init__(self, workflow_id: str, secrets: list[str], every: float) -> None:
        self.workflow_id = workflow_id
        self.secrets = secrets
        self.redact = LineRedactor(secrets)  # secrets in a line never reach the workflow, keys over lines too
        self.every = every
        self.lines: deque[str] = deque(maxlen=MAX_OUTPUT_LINES)
        self._sent: list[str] = []

    def add(self, line: str) -> None:
        masked = self.redact(line)  # every line, blank or not, so a key's END line is seen
        if line.strip():
            self.lines.append(masked[:300])

    async def flush(self) -> None:
        current = list(self.lines)
        if current == self._sent:
            return
        try:
            handle = activity.client().get_workflow_handle(self.workflow_id)
            await handle.signal(SIGNAL, AgentOutput(lines=current))
            self._sent = current
        except Exception as exc:
            log.debug("could not send live output to %s: %s", self.workflow_id, exc)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[LiveOutput]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.every)
                await self.flush()

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""run_agent: drive the ticket's agent in its worktree, checkpointing each step as a WIP commit."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.agents import AgentNotConfigured, AgentRun, build_agent, sandbox
from activities.gitops import commit_all, head
from activities.redact import redact, redact_lines
from activities.settings import Settings
from workflows.contracts import AgentCheckpoint, AgentRequest, AgentResult

# A rate limit shorter than this is waited out by Temporal's retry; longer ones go back to the workflow,
# which waits on a durable timer and frees the worker slot.
SHORT_RATE_LIMIT_SECONDS = 300
HEARTBEAT_EVERY_SECONDS = 5.0


def load_checkpoint(req: AgentRequest) -> AgentCheckpoint:
    """Heartbeat details come back untyped (a dict); re-validate them."""
    details = activity.info().heartbeat_details
    if details:
        return AgentCheckpoint.model_validate(details[0])
    return AgentCheckpoint(session_id=req.session_id or str(uuid.uuid4()))


class AgentActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="run_agent")
    async def run_agent(self, req: AgentRequest) -> AgentResult:
        worktree = Path(req.workspace.path)
        if not worktree.is_dir():
            raise ApplicationError(f"worktree {worktree} is missing on this worker", type="WorkspaceMissing")
        checkpoint = load_checkpoint(req)
        if checkpoint.finished and checkpoint.last_commit == await head(worktree):
            # The previous attempt finished the agent but died before reporting; don't run it twice.
            return AgentResult(
                outcome="done",
                reason="recovered from checkpoint",
                steps=checkpoint.step,
                session_id=checkpoint.session_id,
                last_commit=checkpoint.last_commit,
            )
        result = await self._run(req, worktree, checkpoint)
        return self._settle(result)

    async def _run(self, req: AgentRequest, worktree: Path, checkpoint: AgentCheckpoint) -> AgentResult:
        name = req.ticket.agent or self.settings.default_agent
        try:
            agent = build_agent(name, self.settings)
        except AgentNotConfigured as exc:
            raise ApplicationError(str(exc), type="AgentNotConfigured", non_retryable=True) from exc
        info = activity.info()
        # One file per stage attempt: <activity id>-attempt<n>.log, e.g. run_agent-2-attempt1.log.
        log_path = self.settings.logs_dir / req.ticket.id / f"{info.activity_id}-attempt{info.attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        secrets = self.settings.secret_values()

        with log_path.open("a", encoding="utf-8") as log:

            def on_line(line: str) -> None:
                log.write(redact(line, secrets) + "\n")
                log.flush()
                activity.heartbeat(checkpoint.model_dump(mode="json"))

            async def on_step(description: str) -> None:
                checkpoint.step += 1
                commit = await commit_all(
                    worktree, f"wip(ticketflow {req.ticket.id}): step {checkpoint.step}: {description[:120]}"
                )
                checkpoint.last_commit = commit or checkpoint.last_commit
                activity.heartbeat(checkpoint.model_dump(mode="json"))

            run_root = self.settings.state_dir / "runs" / req.ticket.id
            run_root.mkdir(parents=True, exist_ok=True)
            plan = self._sandbox_plan(name, worktree, run_root)
            run = AgentRun(
                request=req,
                worktree=worktree,
                run_dir=run_root / f"iter{req.iteration}",
                checkpoint=checkpoint,
                on_step=on_step,
                on_line=on_line,
                timeout_seconds=_process_timeout(),
                stall_seconds=self.settings.agent_stall_seconds,
                wrap=lambda argv: sandbox.wrap(argv, plan),
                log_path=log_path,
            )
            async with _heartbeating(checkpoint):
                result = await agent.run(run)
        final = await commit_all(
            worktree, f"wip(ticketflow {req.ticket.id}): iteration {req.iteration} result"
        )
        checkpoint.last_commit = final or checkpoint.last_commit or await head(worktree)
        checkpoint.finished = result.outcome == "done"
        activity.heartbeat(checkpoint.model_dump(mode="json"))
        return result.model_copy(
            update={
                "agent": name,
                "steps": checkpoint.step,
                "last_commit": checkpoint.last_commit,
                "session_id": result.session_id or checkpoint.session_id,
                "reason": redact(result.reason, secrets),
                "output_tail": redact_lines(result.output_tail[-20:], secrets),
            }
        )

    def _sandbox_plan(self, name: str, worktree: Path, run_root: Path) -> sandbox.SandboxPlan:
        """Only the worktree and this ticket's run directory (the agent's HOME) are writable."""
        config = self.settings.agents[name]
        limits = (config.cpu_seconds, config.memory_mb, config.file_size_mb)
        return sandbox.agent_plan(
            self.settings, config.sandbox_mode, config.network, worktree, [run_root], limits
        )

    def _settle(self, result: AgentResult) -> AgentResult:
        """Failures become Temporal retries; long waits and humans go back to the workflow."""
        if result.outcome == "failed":
            raise ApplicationError(result.reason or "agent failed", type="AgentFailed")
        if result.outcome == "rate_limited":
            delay = result.retry_after_seconds
            if delay is None and result.reset_at is not None:
                delay = (result.reset_at - datetime.now(UTC)).total_seconds()
            if delay is None or delay <= SHORT_RATE_LIMIT_SECONDS:
                raise ApplicationError(
                    f"agent rate limited: {result.reason}",
                    type="RateLimited",
                    next_retry_delay=timedelta(seconds=max(1.0, delay or 30.0)),
                    category=ApplicationErrorCategory.BENIGN,
                )
        return result


def _process_timeout() -> float:
    """Leave the process a margin inside the activity's own timeout, so we report instead of vanishing."""
    limit = activity.info().start_to_close_timeout
    seconds = limit.total_seconds() if limit else 6 * 3600
    return max(10.0, seconds - min(60.0, seconds * 0.1))


@contextlib.asynccontextmanager
async def _heartbeating(checkpoint: AgentCheckpoint) -> AsyncIterator[None]:
    """Heartbeat the current checkpoint even while the agent is quiet, until its stall limit."""

    async def beat() -> None:
        while True:
            activity.heartbeat(checkpoint.model_dump(mode="json"))
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

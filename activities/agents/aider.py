"""aider: `aider --message <task> --yes-always`, plain text output.

aider exits 0 even when the model call failed, so the outcome is judged from what it printed: litellm
errors after its own ~60 s of retries (rate limit, auth, context window), "Applied edit to <file>" lines
(our steps) and its "Tokens: ... Cost: ..." report. No session id: the chat history file in the ticket's
run directory is restored on a resumed run (--restore-chat-history).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from activities.agents.base import AgentRun
from activities.agents.streaming import CliAgent, StreamState, short
from activities.proc import ProcessResult
from workflows.contracts import AgentOutcomeKind, AgentResult

APPLIED = re.compile(r"^Applied edit to (?P<file>.+)$")
TOKENS = re.compile(
    r"Tokens: (?P<sent>[\d.]+)(?P<sk>[km]?) sent.*?(?P<recv>[\d.]+)(?P<rk>[km]?) received"
    r"(?:\.\s*Cost: \$(?P<cost>[\d.]+) message)?",
    re.I,
)
ERROR = re.compile(
    r"litellm\.\w+Error|RateLimitError|AuthenticationError|ContextWindowExceededError|"
    r"rate limited you|insufficient credits|NotFoundError|BadRequestError|APIConnectionError"
)
FLAGS = [
    "--yes-always",
    "--no-auto-commits",
    "--no-dirty-commits",
    "--no-pretty",
    "--no-stream",
    "--no-fancy-input",
    "--no-check-update",
    "--no-show-model-warnings",
    "--no-suggest-shell-commands",
    "--no-detect-urls",
    "--analytics-disable",
]
SESSION = "aider-chat-history"


def _count(number: str, suffix: str) -> int:
    return int(float(number) * {"": 1, "k": 1_000, "m": 1_000_000}[suffix.lower()])


class AiderAgent(CliAgent):
    kind = "aider"
    json_stream = False

    def argv(self, run: AgentRun, prompt: str, session_id: str | None, resuming: bool) -> list[str]:
        history = run.run_dir.parent / "aider.chat.history.md"
        argv = [self.binary(), "--message", prompt, *FLAGS]
        argv += [
            "--chat-history-file",
            str(history),
            "--input-history-file",
            str(history.with_suffix(".input")),
        ]
        if resuming:
            argv.append("--restore-chat-history")
        if self.config.model:
            argv += ["--model", self.config.model]
        return [*argv, *self.config.extra_args]

    async def run(self, run: AgentRun) -> AgentResult:
        # aider has no session id of its own; its chat history stands in for one.
        run.checkpoint.session_id = SESSION
        return await super().run(run)

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        yield from ()

    def handle_text(self, line: str, state: StreamState) -> Iterator[str]:
        state.session_id = SESSION
        if applied := APPLIED.match(line.strip()):
            state.steps.append(f"edit {applied['file']}")
        elif tokens := TOKENS.search(line):
            state.add_tokens(
                _count(tokens["sent"], tokens["sk"]),
                _count(tokens["recv"], tokens["rk"]),
                float(tokens["cost"] or 0),
            )
        elif ERROR.search(line):
            state.errors.append(line.strip())
            if not state.classify_error(line):
                state.settle("failed", f"aider: {short(line)}")
        elif line.strip() and not line.startswith(("Aider v", "Model:", "Git repo:", "Repo-map:")):
            state.final_text = (state.final_text + "\n" + line)[-4000:]
        if line.strip():
            yield line

    def _outcome(
        self, run: AgentRun, state: StreamState, proc: ProcessResult
    ) -> tuple[AgentOutcomeKind, str]:
        outcome, reason = super()._outcome(run, state, proc)
        if outcome == "done" and not state.steps:
            # Exit 0 with no edit applied is not success: aider answered instead of changing code.
            lines = state.final_text.strip().splitlines()
            return (
                "blocked",
                f"aider changed no file; its last words: {short(lines[-1]) if lines else '(nothing)'}",
            )
        return outcome, reason

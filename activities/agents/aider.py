"""aider: `aider --message <task> --yes-always`, plain text output.

aider exits 0 even when the model call failed, so the outcome is judged from what it printed: litellm
errors (rate limit, quota, auth, context window), "Applied edit to <file>" lines (our steps) and its
"Tokens: ... Cost: ..." report. No session id: the chat history file in the ticket's run directory is
restored on a resumed run (--restore-chat-history).

aider wraps its messages at ~80 columns, so an error is read as a block: from its `litellm.<X>Error`
line to the next "Retrying in N seconds..." (its own retry: a notice, not an outcome), an applied edit
or token report (the retry worked), or the end of output (final). It reports an exhausted quota
(`insufficient_quota`) as a RateLimitError; the text tells it apart, so it is a usage limit. It must not
touch the repository's files for itself: --no-gitignore (else it adds `.aider*` to .gitignore, which
would land in the ticket's commits), and a git identity in its private HOME (else it writes one into the
read-only git config and stops). It `git add`s each file it creates, and the worktree's index is
read-only in the sandbox (ticketflow commits on the host): aider gets a private copy of the index and
a private object directory in the ticket's run directory (GIT_INDEX_FILE, GIT_OBJECT_DIRECTORY, the real
objects as GIT_ALTERNATE_OBJECT_DIRECTORIES), so its adds succeed without touching the repository.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activities.agents.base import AgentRun
from activities.agents.streaming import CliAgent, StreamState, clean_error, short
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
RETRYING = re.compile(r"^Retrying in \d+(?:\.\d+)? seconds", re.I)
FLAGS = [
    "--yes-always",
    "--no-auto-commits",
    "--no-dirty-commits",
    "--no-gitignore",
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
GIT_IDENTITY = "[user]\n\tname = ticketflow agent\n\temail = agent@ticketflow.invalid\n"
_BARE_MODELS = (
    ("claude", "anthropic"),
    ("gpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("gemini", "gemini"),
)


def git_dirs(worktree: Path) -> tuple[Path, Path] | None:
    """A worktree's index and object directory (a linked worktree's index is in its own gitdir, its
    objects in the common one), found without running git."""
    marker = worktree / ".git"
    if marker.is_dir():
        return marker / "index", marker / "objects"
    try:
        text = marker.read_text().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    own = (worktree / text.removeprefix("gitdir:").strip()).resolve()
    common_file = own / "commondir"
    common = (own / common_file.read_text().strip()).resolve() if common_file.is_file() else own
    return own / "index", common / "objects"


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

    def provider_name(self) -> str:
        """litellm's provider prefix of the model (openai/..., anthropic/...), else guessed from its name."""
        model = self.config.model or ""
        if "/" in model:
            return model.split("/", 1)[0]
        return next((name for prefix, name in _BARE_MODELS if model.startswith(prefix)), "unknown")

    def environment(self, run: AgentRun, home: Path) -> dict[str, str]:
        env = super().environment(run, home)
        found = git_dirs(run.worktree)
        if found is None:
            return env
        real_index, real_objects = found
        index, objects = run.run_dir.parent / "aider.index", run.run_dir.parent / "aider-objects"
        index.unlink(missing_ok=True)
        shutil.rmtree(objects, ignore_errors=True)
        objects.mkdir(parents=True)
        if real_index.is_file():
            shutil.copyfile(real_index, index)
        env["GIT_INDEX_FILE"] = str(index)
        env["GIT_OBJECT_DIRECTORY"] = str(objects)
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(real_objects)
        return env

    def prepare(self, run: AgentRun, home: Path) -> None:
        gitconfig = home / ".gitconfig"
        if not gitconfig.exists():
            gitconfig.write_text(GIT_IDENTITY)
        self._block: list[str] = []

    async def run(self, run: AgentRun) -> AgentResult:
        # aider has no session id of its own; its chat history stands in for one.
        run.checkpoint.session_id = SESSION
        return await super().run(run)

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        yield from ()

    def handle_text(self, line: str, state: StreamState) -> Iterator[str]:
        state.session_id = SESSION
        text = line.strip()
        if self._block and text:
            if RETRYING.match(text):
                self._close(state, retried=True)
            elif not APPLIED.match(text) and not TOKENS.search(text):
                self._block.append(text)
            else:  # a reply came after all: the error was one its client library retried
                self._close(state, retried=True)
        if applied := APPLIED.match(text):
            state.resumable = True
            state.steps.append(f"edit {applied['file']}")
        elif tokens := TOKENS.search(line):
            state.resumable = True
            state.add_tokens(
                _count(tokens["sent"], tokens["sk"]),
                _count(tokens["recv"], tokens["rk"]),
                float(tokens["cost"] or 0),
            )
        elif ERROR.search(line) and not self._block:
            self._block = [text]
        elif (
            text and not self._block and not line.startswith(("Aider v", "Model:", "Git repo:", "Repo-map:"))
        ):
            state.final_text = (state.final_text + "\n" + line)[-4000:]
        if text:
            yield line

    def _close(self, state: StreamState, *, retried: bool) -> None:
        """One error block, read whole: followed by a retry it is a notice, else aider's last word."""
        block, self._block = " ".join(self._block), []
        if retried:
            state.retry_notice(block)
            return
        state.errors.append(block)
        if not state.classify_error(block):
            state.settle("failed", f"aider: {short(clean_error(block))}")

    def _outcome(
        self, run: AgentRun, state: StreamState, proc: ProcessResult
    ) -> tuple[AgentOutcomeKind, str]:
        if self._block:
            self._close(state, retried=False)
        outcome, reason = super()._outcome(run, state, proc)
        if outcome == "done" and not state.steps:
            if state.retrying is not None:  # it retried, then answered without editing
                return "blocked", f"aider changed no file after retrying ({short(state.retrying.message)})"
            # Exit 0 with no edit applied is not success: aider answered instead of changing code.
            lines = state.final_text.strip().splitlines()
            return (
                "blocked",
                f"aider changed no file; its last words: {short(lines[-1]) if lines else '(nothing)'}",
            )
        return outcome, reason

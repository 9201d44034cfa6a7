"""What the CLI agents (Claude Code, Codex, aider, Gemini CLI) share: one process per attempt whose output
is read line by line, turned into progress lines, checkpointed steps, token accounting and one outcome.

An adapter says how to build its argv and how to read one line of its stream (`CliAgent.handle`); this
module runs the process (sandboxed via run.wrap), keeps the raw events as JSON lines next to the attempt's
log, commits each completed edit as a WIP checkpoint with the agent frozen, remembers which sessions were
really started (so a retry or a post-limit run resumes them), and judges the result.

A session counts as started once the CLI can resume it (`StreamState.resumable`), not when the CLI named
it: a CLI whose first call hit a limit has nothing to resume (Gemini then fails "No previous sessions
found"). A CLI's own retry notices are kept aside (`StreamState.retrying`) and only decide the outcome
when the run then fails; a run that recovers and finishes is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from temporalio.exceptions import ApplicationError

from activities import stack
from activities.agents.base import AgentRun
from activities.agents.limits import Limit, is_retry_notice, local_zone, normalise, parse_limit
from activities.proc import ProcessResult, paused, run_process
from activities.redact import redact
from activities.settings import AgentConfig
from workflows.contracts import AgentOutcomeKind, AgentResult, TokenUsage

BASE_ENV = ("PATH", "LANG", "LC_ALL", "TERM", "TZ")
BLOCKED_PREFIX = re.compile(r"^\s*(?:\*\*)?BLOCKED:?(?:\*\*)?\s*(?P<question>.+)$", re.M)
AUTH_FAILURE = re.compile(
    r"invalid api key|invalid x-api-key|authentication_error|authenticationerror|\b401\b|unauthorized|"
    r"please run /login|not logged in|login required|api key not valid|oauth token (?:has )?expired|"
    r"credentials? (?:are )?(?:missing|invalid)|refresh token",
    re.I,
)
PROGRESS_CHARS = 300
INSTRUCTIONS = (
    "Work in the current directory, a git worktree of the repository. Make the change the ticket asks for "
    "and run the tests. Do not commit, push or create branches: ticketflow commits your work. If you "
    "cannot continue without a human decision, end with one line `BLOCKED: <your question>`."
)


@dataclass
class StreamState:
    """What an adapter learned from the stream so far."""

    session_id: str | None = None
    model: str | None = None
    tokens: TokenUsage = field(default_factory=TokenUsage)
    outcome: AgentOutcomeKind | None = None
    reason: str = ""
    reset_at: datetime | None = None
    retry_after: float | None = None
    auth_failure: str | None = None
    final_text: str = ""
    errors: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    session_started: bool = False
    # The CLI could resume this session now: Claude's once it named it (the prompt is saved first),
    # Gemini's and Codex's once the model answered in it.
    resumable: bool = False
    # The last retry notice of the CLI itself (a limit it is waiting out): the outcome only if the run fails.
    retrying: Limit | None = None
    # The CLI's own wait before its last retry (Claude's api_retry retry_delay_ms): the server's Retry-After.
    retry_hint: float | None = None

    def settle(self, outcome: AgentOutcomeKind, reason: str) -> None:
        """Record an outcome; a limit or a question, once seen, is not overwritten by a later generic end."""
        if self.outcome in ("usage_limit", "rate_limited", "blocked") and outcome in ("done", "failed"):
            return
        self.outcome, self.reason = outcome, reason

    def add_tokens(self, prompt: int = 0, completion: int = 0, cost: float = 0.0) -> None:
        self.tokens = self.tokens.plus(TokenUsage(prompt=prompt, completion=completion, cost_usd=cost))

    def limit(self, found: Limit) -> None:
        if found.kind == "usage":
            later = self.reset_at is None or (found.reset_at is not None and found.reset_at > self.reset_at)
            self.outcome, self.reason = "usage_limit", found.message
            self.reset_at = found.reset_at if later else self.reset_at
        elif self.outcome != "usage_limit":
            self.outcome, self.reason, self.retry_after = "rate_limited", found.message, found.retry_after

    def classify_error(self, text: str) -> bool:
        """Error text from the agent: a limit, an auth failure, or neither (False). A retry notice of the
        CLI itself is put aside (`retrying`), not settled: the CLI may still finish."""
        found = parse_limit(text, datetime.now(UTC), local_zone())
        if found is not None and is_retry_notice(text):
            self.retrying = found
            return True
        if found is not None:
            self.limit(found)
            return True
        if AUTH_FAILURE.search(normalise(text)):
            self.auth_failure = clean_error(text)[:300]
            return True
        return False

    def retry_notice(self, text: str) -> None:
        """The CLI is retrying on its own after this error: keep the limit aside, settle nothing."""
        found = parse_limit(text, datetime.now(UTC), local_zone())
        if found is not None:
            self.retrying = found

    def failed_while_retrying(self) -> None:
        """The run failed without a final word: the limit the CLI was last waiting out is the reason."""
        if self.retrying is not None and self.outcome in (None, "failed"):
            self.limit(self.retrying)


def prompt_for(run: AgentRun, resuming: bool) -> str:
    req = run.request
    parts: list[str] = []
    if resuming:
        parts.append(f"Continue working on ticket {req.ticket.id} where you stopped.")
    else:
        parts += [f"Ticket {req.ticket.id}: {req.ticket.title}", req.ticket.body.strip()]
        if req.workspace.context_summary:
            parts.append(f"Repository context:\n{req.workspace.context_summary}")
    test_command = stack.agent_test_command(req.ticket, req.workspace)
    if test_command:
        parts.append(f"Test command: {test_command}")
    if req.feedback:
        parts.append(f"The last attempt did not pass; fix this:\n{req.feedback}")
    if req.guidance:
        parts.append(f"Guidance from a human:\n{req.guidance}")
    parts.append(INSTRUCTIONS)
    return "\n\n".join(parts)


def clean_error(text: str) -> str:
    """An error for humans: the innermost `message` of a JSON error body a CLI printed as is, without the
    request's URL and id."""
    text = normalise(text)
    for _ in range(3):  # a JSON error quoted inside a JSON error
        found = _JSON_MESSAGE.search(text)
        if found is None:
            break
        try:
            message = json.loads(found["quoted"])
        except ValueError:
            break
        text = f"{text[: found.start()].rstrip(' :')}: {normalise(str(message))}".lstrip(": ")
    return _REQUEST_DETAILS.sub("", text).strip()


_JSON_MESSAGE = re.compile(r'[\[{].*"message"\s*:\s*(?P<quoted>"(?:[^"\\]|\\.)*").*[\]}]')
_REQUEST_DETAILS = re.compile(r",?\s*(?:url: \S+?|request id: [\w-]+)(?=,|$)")


def cli_environment(config: AgentConfig, run: AgentRun, home: Path) -> dict[str, str]:
    """An allowlist: the agent sees PATH and locale, its private HOME and only the keys it was given."""
    env = {k: os.environ[k] for k in (*BASE_ENV, *config.pass_env) if k in os.environ}
    env.update(
        {
            "HOME": str(home),
            "TMPDIR": "/tmp",
            "TICKETFLOW_WORKTREE": str(run.worktree),
            "TICKETFLOW_TICKET": run.request.ticket.id,
            "TICKETFLOW_ITERATION": str(run.request.iteration),
        }
    )
    return env


def agent_home(run: AgentRun) -> Path:
    """One HOME per ticket (not per iteration): the CLIs keep their sessions there, so resume finds them."""
    home = run.run_dir.parent / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _session_marker(run: AgentRun, session_id: str) -> Path:
    return run.run_dir.parent / "sessions" / re.sub(r"[^A-Za-z0-9_.-]", "_", session_id)


def session_was_started(run: AgentRun, session_id: str | None) -> bool:
    return bool(session_id) and _session_marker(run, session_id or "").exists()


def mark_session_started(run: AgentRun, session_id: str) -> None:
    marker = _session_marker(run, session_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def session_data(run: AgentRun, session_id: str) -> dict[str, Any]:
    """What an adapter kept about a started session (e.g. Codex's running token totals)."""
    try:
        data = json.loads(_session_marker(run, session_id).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_session_data(run: AgentRun, session_id: str, data: dict[str, Any]) -> None:
    marker = _session_marker(run, session_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.with_suffix(".tmp").write_text(json.dumps(data))
    marker.with_suffix(".tmp").replace(marker)


def short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PROGRESS_CHARS else flat[: PROGRESS_CHARS - 1] + "…"


def human_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class CliAgent:
    """Base of the CLI adapters; subclasses set `kind` and implement argv() and handle()."""

    kind = "cli"
    json_stream = True
    # Whose limits this CLI reports (AgentResult.provider, for a per-provider limit gate).
    provider = "unknown"

    def __init__(self, name: str, config: AgentConfig) -> None:
        self.name = name
        self.config = config

    # ---------------------------------------------------------------------------- adapter hooks

    def argv(self, run: AgentRun, prompt: str, session_id: str | None, resuming: bool) -> list[str]:
        raise NotImplementedError

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        """Read one event of the stream into `state`; yield progress lines for the log."""
        raise NotImplementedError

    def handle_text(self, line: str, state: StreamState) -> Iterator[str]:
        """A line that is not a JSON event (stderr, warnings)."""
        if line.strip():
            yield line

    def prepare(self, run: AgentRun, home: Path) -> None:
        """Per-run setup before the process starts (e.g. a settings file in the private HOME)."""

    def binary(self) -> str:
        return self.config.binary or self.kind

    def environment(self, run: AgentRun, home: Path) -> dict[str, str]:
        """The process environment: the allowlist of cli_environment, adapters may add to it."""
        return cli_environment(self.config, run, home)

    def provider_name(self) -> str:
        return self.provider

    # ------------------------------------------------------------------------------------- run

    async def run(self, run: AgentRun) -> AgentResult:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        home = agent_home(run)
        self.prepare(run, home)
        session_id = run.checkpoint.session_id
        resuming = session_was_started(run, session_id)
        state = StreamState(session_id=session_id if resuming else None)
        if run.request.resume and not resuming:
            run.on_line(f"[ticketflow] no earlier {self.kind} session on this host to resume; starting fresh")
        argv = self.argv(run, prompt_for(run, resuming), session_id, resuming)
        run.on_line(
            f"[ticketflow] {'resuming session ' + str(session_id) if resuming else 'starting'} {self.kind}"
        )
        proc = await self._drive(run, argv, self.environment(run, home), state)
        if state.session_id:
            run.checkpoint.session_id = state.session_id
        return self.judge(run, state, proc)

    async def _drive(
        self, run: AgentRun, argv: list[str], env: dict[str, str], state: StreamState
    ) -> ProcessResult:
        events = _events_file(run)
        # The keys this agent was given may show up in its own output; nothing else secret is in its reach.
        keys = [env[k] for k in self.config.pass_env if len(env.get(k, "")) >= 8]
        pending: asyncio.Queue[str | None] = asyncio.Queue()
        spawned: list[int] = []

        def sink(line: str) -> None:
            before = len(state.steps)
            event = _as_event(line) if self.json_stream else None
            if event is not None and events is not None:
                events.write(redact(json.dumps(event, separators=(",", ":")), keys) + "\n")
                events.flush()
            progress = self.handle(event, state) if event is not None else self.handle_text(line, state)
            for text in progress:
                run.on_line(redact(text, keys))
            if state.session_id and state.resumable and not state.session_started:
                state.session_started = True
                mark_session_started(run, state.session_id)
                run.checkpoint.session_id = state.session_id
            for step in state.steps[before:]:
                pending.put_nowait(step)

        async def committer() -> None:
            # The agent is frozen while its edit is committed, so the checkpoint holds exactly that step.
            while (step := await pending.get()) is not None:
                with paused(spawned[0] if spawned else None):
                    await run.on_step(step)

        commit_task = asyncio.create_task(committer())
        try:
            return await run_process(
                run.wrap(argv),
                cwd=run.worktree,
                env=env,
                timeout=run.timeout_seconds,
                stall_timeout=run.stall_seconds,
                on_line=sink,
                on_spawn=spawned.append,
            )
        finally:
            pending.put_nowait(None)
            await commit_task
            if events is not None:
                events.close()

    def judge(self, run: AgentRun, state: StreamState, proc: ProcessResult) -> AgentResult:
        result = AgentResult(
            outcome="done",
            agent=self.name,
            session_id=state.session_id or run.checkpoint.session_id,
            model=state.model or self.config.model,
            tokens=state.tokens,
            output_tail=proc.tail[-40:],
            duration_seconds=proc.duration_seconds,
        )
        outcome, reason = self._outcome(run, state, proc)
        return result.model_copy(
            update={
                "outcome": outcome,
                "reason": reason,
                "reset_at": state.reset_at if outcome == "usage_limit" else None,
                "retry_after_seconds": (state.retry_after or state.retry_hint)
                if outcome == "rate_limited"
                else None,
                "provider": self.provider_name() if outcome in ("usage_limit", "rate_limited") else None,
            }
        )

    def _outcome(
        self, run: AgentRun, state: StreamState, proc: ProcessResult
    ) -> tuple[AgentOutcomeKind, str]:
        if proc.timed_out:
            return (
                "failed",
                f"{self.kind} ran past its execution timeout ({human_seconds(run.timeout_seconds)})",
            )
        if proc.stalled:
            return "failed", f"{self.kind} printed nothing for {human_seconds(run.stall_seconds or 0)}"
        if state.outcome is None and proc.exit_code != 0:
            # Events were read already; the plain lines (stderr) may still say what went wrong.
            for text in [*state.errors, *(line for line in proc.tail[-10:] if _as_event(line) is None)]:
                state.classify_error(text)
        if proc.exit_code != 0:
            state.failed_while_retrying()
        if state.auth_failure and state.outcome not in ("usage_limit", "rate_limited"):
            raise ApplicationError(
                f"{self.name} ({self.kind}) could not authenticate: {state.auth_failure.rstrip('.')}. Log it "
                "in for the worker, or pass its key with pass_env",
                type="AgentAuthFailed",
                non_retryable=True,
            )
        if state.outcome is not None and state.outcome != "done":
            return state.outcome, state.reason
        if question := BLOCKED_PREFIX.search(state.final_text):
            return "blocked", question["question"].strip()
        if proc.exit_code != 0:
            detail = " | ".join((state.errors or proc.tail)[-3:])
            return "failed", f"{self.kind} exited {proc.exit_code}: {short(detail)}"
        return "done", state.reason


def _as_event(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _events_file(run: AgentRun) -> IO[str] | None:
    if run.log_path is None:
        return None
    path = run.log_path.with_name(run.log_path.name.removesuffix(".log") + ".events.jsonl")
    with contextlib.suppress(OSError):
        return path.open("a", encoding="utf-8")
    return None

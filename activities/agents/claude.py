"""Claude Code in print mode: `claude -p <task> --output-format stream-json --verbose`.

The session id is chosen by us (--session-id) so it is known even if the process dies before its first
event; after a usage-limit wait, a retry or a fix-loop iteration the same session continues (--resume).
Limits come from `rate_limit_event` (resetsAt, epoch seconds) first, then the result's text. Its own
retries (`system/api_retry`: attempt, delay, HTTP status) are logged and their delay kept as the server's
Retry-After, in case the run then ends rate limited.

Permissions: `--permission-mode acceptEdits` lets it edit files, but in -p mode every Bash call is denied
unless allowed: the ticket's test command (and only that, by default) is allowed with `--allowedTools`
so the agent can run the tests the prompt asks for. `extra_args` can allow more.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from typing import Any

from activities import stack
from activities.agents.base import AgentRun
from activities.agents.limits import Limit, reset_from_epoch
from activities.agents.streaming import CliAgent, StreamState, clean_error, session_was_started, short
from workflows.contracts import AgentResult

EDIT_TOOLS = {"Edit", "MultiEdit", "Write", "NotebookEdit"}


def allowed_test_tools(test_command: str | None) -> list[str]:
    """Claude permission rules that allow exactly the test command, with or without more arguments
    (`pytest` also allows `pytest tests/test_x.py -k name`); nothing when there is none."""
    if not test_command or not test_command.strip():
        return []
    command = " ".join(shlex.split(test_command)) if _plain(test_command) else test_command.strip()
    return [f"Bash({command})", f"Bash({command}:*)"]


def _plain(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


def _is_uuid(value: str | None) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class ClaudeAgent(CliAgent):
    kind = "claude"
    provider = "anthropic"

    async def run(self, run: AgentRun) -> AgentResult:
        self._edits: dict[str, str] = {}  # tool_use id -> the edit it asks for
        # --session-id takes only a UUID; a checkpoint from elsewhere gets one of ours (nothing to resume).
        if not _is_uuid(run.checkpoint.session_id) and not session_was_started(
            run, run.checkpoint.session_id
        ):
            run.checkpoint.session_id = str(uuid.uuid4())
        return await super().run(run)

    def argv(self, run: AgentRun, prompt: str, session_id: str | None, resuming: bool) -> list[str]:
        argv = [self.binary(), "-p", prompt, "--output-format", "stream-json", "--verbose"]
        argv += ["--max-turns", str(self.config.max_turns), "--permission-mode", "acceptEdits"]
        allowed = allowed_test_tools(stack.agent_test_command(run.request.ticket, run.request.workspace))
        if allowed:
            argv += ["--allowedTools", ",".join(allowed)]
        if session_id:
            argv += ["--resume", session_id] if resuming else ["--session-id", session_id]
        if self.config.model:
            argv += ["--model", self.config.model]
        return [*argv, *self.config.extra_args]

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            state.session_id = event.get("session_id") or state.session_id
            state.model = event.get("model") or state.model
            # Claude saves the session with the prompt before calling the model: --resume works at once.
            state.resumable = True
            yield f"[init] session {state.session_id} model {state.model}"
        elif kind == "system" and event.get("subtype") == "api_retry":
            yield self._retry(event, state)
        elif kind == "assistant":
            yield from self._assistant(event.get("message") or {}, state)
        elif kind == "user":
            yield from self._tool_results(event.get("message") or {}, state)
        elif kind == "rate_limit_event":
            yield from self._rate_limit(event.get("rate_limit_info") or {}, state)
        elif kind == "result":
            yield from self._result(event, state)

    def _retry(self, event: dict[str, Any], state: StreamState) -> str:
        delay = float(event.get("retry_delay_ms") or 0) / 1000
        if event.get("error_status") in (429, 529):
            state.retry_hint = delay or state.retry_hint
        status = event.get("error_status") or "no status"
        return (
            f"[retry] Claude retries in {delay:.1f} s (attempt {event.get('attempt')}/"
            f"{event.get('max_retries')}): {event.get('error') or 'error'} ({status})"
        )

    def _assistant(self, message: dict[str, Any], state: StreamState) -> Iterator[str]:
        for block in message.get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                state.final_text = block["text"]
                yield f"[assistant] {short(block['text'])}"
            elif block.get("type") == "tool_use":
                tool, args = block.get("name", "?"), block.get("input") or {}
                target = args.get("file_path") or args.get("command") or args.get("pattern") or ""
                if tool == "AskUserQuestion":
                    questions = args.get("questions") or [{"question": args.get("question", "")}]
                    state.settle("blocked", "; ".join(str(q.get("question", q)) for q in questions))
                if tool in EDIT_TOOLS:  # a step once its result says it was done, not when asked for
                    self._edits[str(block.get("id"))] = f"{tool} {target}".strip()
                yield f"[tool] {tool} {short(str(target))}".rstrip()

    def _tool_results(self, message: dict[str, Any], state: StreamState) -> Iterator[str]:
        for block in message.get("content") or []:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            edit = self._edits.pop(str(block.get("tool_use_id")), None)
            if block.get("is_error"):
                yield f"[tool error] {short(str(block.get('content', '')))}"
            elif edit is not None:
                state.steps.append(edit)

    def _rate_limit(self, info: dict[str, Any], state: StreamState) -> Iterator[str]:
        status = info.get("status")
        rejected = status == "rejected" or (
            info.get("isUsingOverage") and info.get("overageStatus") == "rejected"
        )
        if rejected:
            reset = reset_from_epoch(info.get("resetsAt"))
            window = info.get("rateLimitType", "usage")
            state.limit(Limit("usage", f"Claude {window} limit reached", reset_at=reset))
            when = reset.isoformat() if reset else "at an unknown time"
            yield f"[limit] {window} limit reached; resets {when}"
        elif status == "allowed_warning":
            window = info.get("rateLimitType", "usage")
            yield f"[limit] approaching the {window} limit ({info.get('utilization')})"

    def _result(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        usage = event.get("usage") or {}
        prompt = sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens"))
        prompt += int(usage.get("cache_read_input_tokens") or 0)
        state.add_tokens(
            prompt, int(usage.get("output_tokens") or 0), float(event.get("total_cost_usd") or 0)
        )
        state.session_id = event.get("session_id") or state.session_id
        text = str(event.get("result") or "")
        subtype = event.get("subtype")
        turns = event.get("num_turns")
        if subtype == "error_max_turns" or event.get("terminal_reason") == "max_turns":
            state.settle(
                "blocked",
                f"Claude stopped after {turns} turns (max_turns {self.config.max_turns}) "
                "without finishing; answer with guidance to let it continue",
            )
        elif event.get("is_error") or subtype not in ("success", None):
            state.errors.append(text or str(event.get("errors") or subtype))
            # A structured rate_limit_event already gave the exact reset; the prose only repeats it.
            if state.outcome != "usage_limit" and not state.classify_error(text or str(subtype)):
                text = clean_error(text)
                if event.get("api_error_status") == 429:
                    state.settle("rate_limited", text or "Claude API returned 429")
                else:
                    state.settle("failed", f"Claude reported an error ({subtype}): {short(text)}")
        else:
            state.final_text = text or state.final_text
            if event.get("permission_denials"):
                denied = ", ".join(str(d.get("tool_name", d)) for d in event["permission_denials"][:5])
                state.settle("blocked", f"Claude was denied tools it needed: {denied}")
            else:
                state.settle("done", short(text))
        yield f"[result] {subtype} after {turns} turns, ${event.get('total_cost_usd') or 0}: {short(text)}"

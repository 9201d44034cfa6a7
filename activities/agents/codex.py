"""OpenAI Codex: `codex exec --json <task>`, resumed with `codex exec --json resume <thread id> <task>`.

Codex chooses the session (thread) id and reports it in `thread.started`. Its exit code is 0 or 1 only,
so the outcome comes from the events: `turn.failed`/`error` text carries limits ("You've hit your usage
limit. Try again at 3:28 PM.") and auth failures; `request_user_input` means it needs a human.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from activities.agents.base import AgentRun
from activities.agents.streaming import CliAgent, StreamState, short


class CodexAgent(CliAgent):
    kind = "codex"

    def argv(self, run: AgentRun, prompt: str, session_id: str | None, resuming: bool) -> list[str]:
        argv = [self.binary(), "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check"]
        if self.config.model:
            argv += ["-m", self.config.model]
        argv += self.config.extra_args
        if resuming and session_id:
            return [*argv, "resume", session_id, prompt]
        return [*argv, prompt]

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        kind = event.get("type", "")
        if kind == "thread.started":
            state.session_id = event.get("thread_id") or state.session_id
            yield f"[thread] {state.session_id}"
        elif kind == "turn.completed":
            usage = event.get("usage") or {}
            state.add_tokens(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
            state.settle("done", state.reason)
            yield f"[turn] completed ({usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out)"
        elif kind in ("turn.failed", "error"):
            message = str((event.get("error") or {}).get("message") or event.get("message") or kind)
            state.errors.append(message)
            if not state.classify_error(message):
                state.settle("failed", f"Codex: {short(message)}")
            yield f"[error] {short(message)}"
        elif kind == "request_user_input":
            questions = event.get("questions") or []
            text = "; ".join(str(q.get("question", q)) if isinstance(q, dict) else str(q) for q in questions)
            state.settle("blocked", text or "Codex asked for input")
            yield f"[question] {short(text)}"
        elif kind.startswith("item."):
            yield from self._item(kind, event.get("item") or {}, state)

    def _item(self, kind: str, item: dict[str, Any], state: StreamState) -> Iterator[str]:
        item_type = item.get("type")
        if kind != "item.completed":
            return
        if item_type == "agent_message":
            state.final_text = str(item.get("text") or "")
            yield f"[assistant] {short(state.final_text)}"
        elif item_type == "file_change":
            paths = ", ".join(str(c.get("path")) for c in item.get("changes") or [])
            if item.get("status", "completed") == "completed":
                state.steps.append(f"edit {paths}")
            yield f"[edit] {paths} ({item.get('status', 'completed')})"
        elif item_type == "command_execution":
            yield f"[command] {short(str(item.get('command')))} -> exit {item.get('exit_code')}"
            if item.get("status") == "declined":
                state.settle("blocked", f"Codex was not allowed to run: {short(str(item.get('command')))}")
        elif item_type == "error":
            message = str(item.get("message") or "")
            state.errors.append(message)
            state.classify_error(message)
            yield f"[error] {short(message)}"

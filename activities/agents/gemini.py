"""Gemini CLI: `gemini -p <task> --output-format stream-json`, resumed with `-r <session id>`.

The session id comes in the `init` event. The final `result` event says success or error; errors carry
Google's quota classes (RetryableQuotaError: "Please retry in 34.07s"; TerminalQuotaError: daily quota).
Exit code 53 is the turn limit (model.maxSessionTurns, which we set from max_turns) and 41 an auth failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activities.agents.base import AgentRun
from activities.agents.streaming import CliAgent, StreamState, short
from activities.proc import ProcessResult
from workflows.contracts import AgentOutcomeKind

EDIT_TOOLS = {"write_file", "replace", "edit", "edit_file", "write_new_file"}
EXIT_AUTH, EXIT_TURN_LIMIT = 41, 53


class GeminiAgent(CliAgent):
    kind = "gemini"

    def argv(self, run: AgentRun, prompt: str, session_id: str | None, resuming: bool) -> list[str]:
        argv = [self.binary(), "-p", prompt, "--output-format", "stream-json", "--approval-mode", "auto_edit"]
        argv.append("--skip-trust")
        if resuming and session_id:
            argv += ["-r", session_id]
        if self.config.model:
            argv += ["-m", self.config.model]
        return [*argv, *self.config.extra_args]

    def prepare(self, run: AgentRun, home: Path) -> None:
        """Gemini's turn cap lives in its settings file; ours is in the agent's private HOME."""
        path = home / ".gemini" / "settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            data = {}
        data.setdefault("model", {})["maxSessionTurns"] = self.config.max_turns
        path.write_text(json.dumps(data, indent=2))
        self._tools: dict[str, str] = {}

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        kind = event.get("type")
        if kind == "init":
            state.session_id = event.get("session_id") or state.session_id
            state.model = event.get("model") or state.model
            yield f"[init] session {state.session_id} model {state.model}"
        elif kind == "message" and event.get("role") == "assistant":
            content = str(event.get("content") or "")
            state.final_text = state.final_text + content if event.get("delta") else content
            if not event.get("delta"):
                yield f"[assistant] {short(content)}"
        elif kind == "tool_use":
            self._tools[str(event.get("tool_id"))] = str(event.get("tool_name"))
            params = event.get("parameters") or {}
            target = params.get("file_path") or params.get("command") or ""
            yield f"[tool] {event.get('tool_name')} {short(str(target))}"
        elif kind == "tool_result":
            tool = self._tools.get(str(event.get("tool_id")), "tool")
            if event.get("status") == "success" and tool in EDIT_TOOLS:
                state.steps.append(f"{tool}")
            yield f"[tool result] {tool} {event.get('status')}"
        elif kind == "error":
            message = str(event.get("message") or "")
            state.errors.append(message)
            if event.get("severity") == "error":
                state.classify_error(message)
            yield f"[error] {short(message)}"
        elif kind == "result":
            yield from self._result(event, state)

    def _result(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        stats = event.get("stats") or {}
        state.add_tokens(int(stats.get("input_tokens") or 0), int(stats.get("output_tokens") or 0))
        if event.get("status") == "error":
            error = event.get("error") or {}
            message = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            state.errors.append(message)
            if not state.classify_error(message):
                state.settle("failed", f"Gemini: {short(message)}")
            yield f"[result] error {short(message)}"
        else:
            state.settle("done", short(state.final_text))
            yield f"[result] success ({stats.get('total_tokens', 0)} tokens)"

    def _outcome(
        self, run: AgentRun, state: StreamState, proc: ProcessResult
    ) -> tuple[AgentOutcomeKind, str]:
        if proc.exit_code == EXIT_TURN_LIMIT and state.outcome != "usage_limit":
            return "blocked", (
                f"Gemini stopped at its turn limit (max_turns {self.config.max_turns}) without finishing; "
                "answer with guidance to let it continue"
            )
        if proc.exit_code == EXIT_AUTH and not state.auth_failure:
            state.auth_failure = " | ".join(state.errors[-2:]) or "exit code 41 (authentication)"
        return super()._outcome(run, state, proc)

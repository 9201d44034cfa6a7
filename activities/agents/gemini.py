"""Gemini CLI: `gemini -p <task> --output-format stream-json`, resumed with `-r <session id>`.

The session id comes in the `init` event. The final `result` event says success or error; errors carry
Google's quota classes (RetryableQuotaError: "Please retry in 34.07s"; TerminalQuotaError: daily quota).
Exit code 53 is the turn limit (model.maxSessionTurns, which we set from max_turns) and 41 an auth failure.

Gemini CLI 0.61 reports API errors with `error.type` "unknown" and the API's JSON in the message, exits
with the HTTP status mod 256 (429 -> 173, 400 -> 144), and prints its own retries as plain text ("Attempt 1
failed: ... Retrying after 5889ms..."): those are notices, not outcomes. A session it named in `init` can
only be resumed once the model answered in it (otherwise: "No previous sessions found", exit 42).
With an API key in pass_env, its settings select the API-key auth (without it: exit 41).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activities.agents.base import AgentRun
from activities.agents.streaming import CliAgent, StreamState, clean_error, short
from activities.proc import ProcessResult
from workflows.contracts import AgentOutcomeKind

EDIT_TOOLS = {"write_file", "replace", "edit", "edit_file", "write_new_file"}
EXIT_AUTH, EXIT_TURN_LIMIT = 41, 53


class GeminiAgent(CliAgent):
    kind = "gemini"
    provider = "google"

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
        auth = data.setdefault("security", {}).setdefault("auth", {})
        if not auth.get("selectedType") and (selected := self._auth_type()):
            auth["selectedType"] = selected
        path.write_text(json.dumps(data, indent=2))
        self._tools: dict[str, tuple[str, str]] = {}

    def _auth_type(self) -> str | None:
        """The auth Gemini CLI must use for the key it was given (headless, it cannot ask)."""
        given = {name for name in self.config.pass_env if os.environ.get(name)}
        if os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() == "true" and (
            given & {"GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"}
        ):
            return "vertex-ai"
        if given & {"GEMINI_API_KEY", "GOOGLE_API_KEY"}:
            return "gemini-api-key"
        return None

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        kind = event.get("type")
        if kind == "init":
            state.session_id = event.get("session_id") or state.session_id
            state.model = event.get("model") or state.model
            yield f"[init] session {state.session_id} model {state.model}"
        elif kind == "message" and event.get("role") == "assistant":
            state.resumable = True
            content = str(event.get("content") or "")
            state.final_text = state.final_text + content if event.get("delta") else content
            if not event.get("delta"):
                yield f"[assistant] {short(content)}"
        elif kind == "tool_use":
            state.resumable = True
            params = event.get("parameters") or {}
            target = str(params.get("file_path") or params.get("command") or "")
            self._tools[str(event.get("tool_id"))] = (str(event.get("tool_name")), target)
            yield f"[tool] {event.get('tool_name')} {short(target)}"
        elif kind == "tool_result":
            tool, target = self._tools.get(str(event.get("tool_id")), ("tool", ""))
            if event.get("status") == "success" and tool in EDIT_TOOLS:
                state.steps.append(f"{tool} {target}".strip())
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
            kind = error.get("type") or "Error"
            text = clean_error(str(error.get("message") or ""))
            text = text.removeprefix("[API Error: ").replace(".]", ".", 1)
            # "Gemini" in the text: a quota without a reset time is Google's daily one (midnight Pacific).
            message = f"Gemini {kind if kind != 'unknown' else 'API error'}: {text}"
            state.errors.append(message)
            if not state.classify_error(message):
                state.settle("failed", short(message))
            yield f"[result] error {short(message)}"
        else:
            state.settle("done", short(state.final_text))
            yield f"[result] success ({stats.get('total_tokens', 0)} tokens)"

    def handle_text(self, line: str, state: StreamState) -> Iterator[str]:
        """Plain text is stderr: its retry notices ("Attempt 1 failed: ...") are kept aside."""
        if line.strip().lower().startswith("attempt "):
            state.classify_error(line)
        yield from super().handle_text(line, state)

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

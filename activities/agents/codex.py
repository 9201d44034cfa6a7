"""OpenAI Codex: `codex exec --json <task>`, resumed with `codex exec --json resume <thread id> <task>`.

Codex chooses the session (thread) id and reports it in `thread.started`; the thread can be resumed once
the model answered in it. Its exit code is 0 or 1 only, so the outcome comes from the events:
`turn.failed`/`error` text carries limits ("You\u2019ve hit your usage limit. Try again at 3:28 PM.", spend
caps, "Quota exceeded") and auth failures; `request_user_input` means it needs a human. Its own retries
("Reconnecting... 1/5 (...429...)") are only notices: a run that recovers is done.

`turn.completed.usage` is the thread's running total, so a resumed thread reports what earlier runs
already counted: the totals are kept with the session and only the difference is added.

Codex refuses to create its helper binaries (apply_patch among them) when its home is under the temporary
directory, and every edit then fails; its TMPDIR is therefore a directory of the ticket's run directory.
An edit that failed is not done: a run whose every edit failed is failed.

Codex's own sandbox (`--sandbox workspace-write`: namespaces, seccomp) cannot be set up inside
ticketflow's (no capabilities, no nested namespaces): every edit fails "Failed to write file". Inside
ticketflow's sandbox, which already confines it to the worktree and its run directory, Codex runs with
`--sandbox danger-full-access`; without it (sandbox = "off", or no bwrap) with its own workspace-write.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activities.agents import sandbox
from activities.agents.base import AgentRun
from activities.agents.streaming import (
    CliAgent,
    StreamState,
    clean_error,
    save_session_data,
    session_data,
    session_was_started,
    short,
)
from activities.proc import ProcessResult
from workflows.contracts import AgentOutcomeKind, AgentResult


class CodexAgent(CliAgent):
    kind = "codex"
    provider = "openai"

    def argv(self, run: AgentRun, prompt: str, session_id: str | None, resuming: bool) -> list[str]:
        argv = [self.binary(), "exec", "--json", "--sandbox", self.own_sandbox(), "--skip-git-repo-check"]
        if self.config.model:
            argv += ["-m", self.config.model]
        argv += self.config.extra_args
        if resuming and session_id:
            return [*argv, "resume", session_id, prompt]
        return [*argv, prompt]

    def own_sandbox(self) -> str:
        """Codex's sandbox mode: its own only where ticketflow's is not around it."""
        if self.config.sandbox_mode != "off" and sandbox.bwrap_problem() is None:
            return "danger-full-access"
        return "workspace-write"

    def provider_name(self) -> str:
        """A configured gateway (`-c model_provider=NAME`) is the provider whose limits these are."""
        args = self.config.extra_args
        for index, arg in enumerate(args[:-1]):
            if arg in ("-c", "--config") and args[index + 1].startswith("model_provider="):
                return args[index + 1].split("=", 1)[1].strip().strip("\"'") or self.provider
        return self.provider

    def environment(self, run: AgentRun, home: Path) -> dict[str, str]:
        env = super().environment(run, home)
        tmp = run.run_dir.parent / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    async def run(self, run: AgentRun) -> AgentResult:
        self._run = run
        self._failed_edits: list[str] = []
        session = run.checkpoint.session_id
        started = session_was_started(run, session)
        self._counted = dict(session_data(run, session or "").get("usage") or {}) if started else {}
        return await super().run(run)

    def handle(self, event: dict[str, Any], state: StreamState) -> Iterator[str]:
        kind = event.get("type", "")
        if kind == "thread.started":
            state.session_id = event.get("thread_id") or state.session_id
            yield f"[thread] {state.session_id}"
        elif kind == "turn.completed":
            yield self._usage(event.get("usage") or {}, state)
            state.resumable = True
            state.settle("done", state.reason)
        elif kind in ("turn.failed", "error"):
            message = str((event.get("error") or {}).get("message") or event.get("message") or kind)
            state.errors.append(message)
            if not state.classify_error(message):
                state.settle("failed", f"Codex: {short(clean_error(message))}")
            yield f"[error] {short(message)}"
        elif kind == "request_user_input":
            questions = event.get("questions") or []
            text = "; ".join(str(q.get("question", q)) if isinstance(q, dict) else str(q) for q in questions)
            state.settle("blocked", text or "Codex asked for input")
            yield f"[question] {short(text)}"
        elif kind.startswith("item."):
            yield from self._item(kind, event.get("item") or {}, state)

    def _usage(self, usage: dict[str, Any], state: StreamState) -> str:
        """Add what this run used: the thread's running total minus what earlier runs counted."""
        total_in, total_out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        before_in, before_out = int(self._counted.get("input") or 0), int(self._counted.get("output") or 0)
        if total_in < before_in or total_out < before_out:  # not a running total after all
            before_in = before_out = 0
        state.add_tokens(total_in - before_in, total_out - before_out)
        self._counted = {"input": total_in, "output": total_out}
        if state.session_id:
            save_session_data(self._run, state.session_id, {"usage": self._counted})
        return (
            f"[turn] completed ({total_in - before_in} in, {total_out - before_out} out; "
            f"thread total {total_in} in, {total_out} out)"
        )

    def _item(self, kind: str, item: dict[str, Any], state: StreamState) -> Iterator[str]:
        item_type = item.get("type")
        if kind != "item.completed":
            return
        if item_type in ("agent_message", "file_change", "command_execution"):
            state.resumable = True  # the model answered in this thread
        if item_type == "agent_message":
            state.final_text = str(item.get("text") or "")
            yield f"[assistant] {short(state.final_text)}"
        elif item_type == "file_change":
            paths = ", ".join(str(c.get("path")) for c in item.get("changes") or [])
            status = item.get("status", "completed")
            if status == "completed":
                state.steps.append(f"edit {paths}")
            else:
                self._failed_edits.append(paths)
            yield f"[edit] {paths} ({status})"
        elif item_type == "command_execution":
            yield f"[command] {short(str(item.get('command')))} -> exit {item.get('exit_code')}"
            if item.get("status") == "declined":
                state.settle("blocked", f"Codex was not allowed to run: {short(str(item.get('command')))}")
        elif item_type == "error":
            message = str(item.get("message") or "")
            state.errors.append(message)
            state.classify_error(message)
            yield f"[error] {short(message)}"

    def _outcome(
        self, run: AgentRun, state: StreamState, proc: ProcessResult
    ) -> tuple[AgentOutcomeKind, str]:
        outcome, reason = super()._outcome(run, state, proc)
        if outcome == "done" and self._failed_edits and not state.steps:
            return "failed", (
                f"Codex could not apply its edits ({short(', '.join(self._failed_edits))}); "
                "its own sandbox refused them (see the attempt's log)"
            )
        return outcome, reason

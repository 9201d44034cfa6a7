#!/usr/bin/env python3
"""Stand-in for the claude, codex, aider and gemini CLIs: prints each one's stream format.

Kept only for what the real CLIs (tests/agents/test_real_clis.py, run against tests/fakes/model_apis.py)
cannot be made to emit on demand: Claude's `error_max_turns` and AskUserQuestion, Codex's
`request_user_input` and declined commands, Gemini's exit 53, silence and stalls, and the workflow tests
that need a CLI on machines without the real ones. Formats the real CLIs do emit are tested from their
recorded output (tests/agents/recorded/) instead.

Invoked through the symlinks next to this file; the name it was called by picks the format. What it does
is scripted by $FAKE_AGENT_SCENARIO (success, usage_limit, usage_limit_once, rate_limit, max_turns, auth,
question, silent); $FAKE_AGENT_RESET_IN sets a limit's reset in seconds from now. Every invocation appends
its argv as one JSON line to $HOME/fake-agent-argv.jsonl, so tests can check e.g. `--resume <id>`.
Only the standard library: it runs inside the sandbox with the system's python3.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

KIND = Path(sys.argv[0]).name
ARGS = sys.argv[1:]


def emit(event: dict[str, object]) -> None:
    print(json.dumps(event), flush=True)


def value_after(flag: str) -> str | None:
    return ARGS[ARGS.index(flag) + 1] if flag in ARGS else None


def scenario() -> str:
    name = os.environ.get("FAKE_AGENT_SCENARIO", "success")
    if name == "usage_limit_once":  # the first invocation for this HOME hits the limit, later ones work
        record = Path.home() / "fake-agent-argv.jsonl"
        runs = len(record.read_text().splitlines()) if record.exists() else 0
        return "success" if runs > 1 else "usage_limit"
    return name


def reset_at() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=float(os.environ.get("FAKE_AGENT_RESET_IN", "3600")))


def edit() -> str:
    path = Path("notes") / f"{KIND}.txt"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as handle:
        handle.write(f"{KIND} was here\n")
    return str(path)


def claude(case: str) -> int:
    session = value_after("--resume") or value_after("--session-id") or str(uuid.uuid4())
    emit(
        {
            "type": "system",
            "subtype": "init",
            "session_id": session,
            "model": "claude-sonnet-4-5",
            "tools": [],
        }
    )
    usage = {"input_tokens": 120, "cache_read_input_tokens": 30, "output_tokens": 45}
    base = {"type": "result", "session_id": session, "num_turns": 3, "duration_ms": 900, "usage": usage}
    if case == "success":
        path = edit()
        emit(
            {
                "type": "assistant",
                "message": {
                    "model": "claude-sonnet-4-5",
                    "content": [
                        {"type": "text", "text": "I'll add the note."},
                        {"type": "tool_use", "id": "t1", "name": "Edit", "input": {"file_path": path}},
                    ],
                },
            }
        )
        emit(
            {
                "type": "user",
                "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            }
        )
        emit(
            {
                **base,
                "subtype": "success",
                "is_error": False,
                "result": "Added the note.",
                "total_cost_usd": 0.0123,
            }
        )
        return 0
    if case == "usage_limit":
        reset = reset_at()
        emit(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {
                    "status": "rejected",
                    "resetsAt": int(reset.timestamp()) + 1,
                    "rateLimitType": "five_hour",
                },
            }
        )
        emit(
            {
                **base,
                "subtype": "success",
                "is_error": True,
                "terminal_reason": "api_error",
                "api_error_status": 429,
                "result": "You've hit your limit · resets 3pm (Europe/Berlin)",
            }
        )
        return 1
    if case == "rate_limit":
        emit(
            {
                **base,
                "subtype": "success",
                "is_error": True,
                "terminal_reason": "api_error",
                "api_error_status": 429,
                "result": "API Error: Server is temporarily limiting requests (not your usage limit)",
            }
        )
        return 1
    if case == "max_turns":
        emit(
            {
                **base,
                "subtype": "error_max_turns",
                "is_error": True,
                "num_turns": 40,
                "terminal_reason": "max_turns",
            }
        )
        return 1
    if case == "auth":
        emit(
            {**base, "subtype": "success", "is_error": True, "result": "Invalid API key · Please run /login"}
        )
        return 1
    if case == "question":
        emit(
            {
                **base,
                "subtype": "success",
                "is_error": False,
                "result": "I need a decision.\nBLOCKED: Should rounding be banker's rounding?",
            }
        )
        return 0
    return silent()


def codex(case: str) -> int:
    thread = ARGS[ARGS.index("resume") + 1] if "resume" in ARGS else "0199a213-81c0-7800-8aa1-bbab2a035a53"
    emit({"type": "thread.started", "thread_id": thread})
    emit({"type": "turn.started"})
    if case == "success":
        path = edit()
        emit(
            {
                "type": "item.completed",
                "item": {
                    "id": "item_1",
                    "type": "file_change",
                    "status": "completed",
                    "changes": [{"path": path, "kind": "update"}],
                },
            }
        )
        emit({"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "Done."}})
        emit(
            {
                "type": "turn.completed",
                "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122},
            }
        )
        return 0
    messages = {
        "usage_limit": "You've hit your usage limit. Try again at "
        + reset_at().astimezone().strftime("%-I:%M %p")
        + ".",
        "rate_limit": "exceeded retry limit, last status: 429 Too Many Requests, retry-after: 20",
        "auth": "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header",
    }
    if case in messages:
        emit({"type": "error", "message": messages[case]})
        emit({"type": "turn.failed", "error": {"message": messages[case]}})
        return 1
    if case == "question":
        emit(
            {
                "type": "request_user_input",
                "id": "q1",
                "call_id": "c1",
                "questions": [{"question": "Which database should I use?"}],
            }
        )
        return 0
    return silent()


def gemini(case: str) -> int:
    session = value_after("-r") or "5e6f7a8b-0000-4000-8000-000000000001"
    emit(
        {
            "type": "init",
            "timestamp": "2026-08-08T10:00:00Z",
            "session_id": session,
            "model": "gemini-2.5-pro",
        }
    )
    stats = {
        "total_tokens": 1500,
        "input_tokens": 1200,
        "output_tokens": 300,
        "duration_ms": 800,
        "tool_calls": 1,
    }
    if case == "success":
        path = edit()
        emit(
            {
                "type": "tool_use",
                "tool_name": "write_file",
                "tool_id": "w1",
                "parameters": {"file_path": path},
            }
        )
        emit({"type": "tool_result", "tool_id": "w1", "status": "success", "output": "ok"})
        emit({"type": "message", "role": "assistant", "content": "Wrote the note.", "delta": True})
        emit({"type": "result", "status": "success", "stats": stats})
        return 0
    errors = {
        "usage_limit": ("TerminalQuotaError", "You have exhausted your capacity on this model."),
        "rate_limit": ("RetryableQuotaError", "Resource has been exhausted. Please retry in 34.07s."),
        "auth": ("FatalAuthenticationError", "API key not valid. Please pass a valid API key."),
    }
    if case in errors:
        kind, message = errors[case]
        emit(
            {"type": "result", "status": "error", "error": {"type": kind, "message": message}, "stats": stats}
        )
        return 41 if case == "auth" else 1
    if case == "max_turns":
        emit({"type": "error", "severity": "error", "message": "Reached max session turns for this session."})
        return 53
    if case == "question":
        emit(
            {"type": "message", "role": "assistant", "content": "BLOCKED: Which API version should I target?"}
        )
        emit({"type": "result", "status": "success", "stats": stats})
        return 0
    return silent()


def aider(case: str) -> int:
    print(
        "Aider v0.86.1\nModel: ollama_chat/qwen2.5-coder:14b with diff edit format\nGit repo: .git",
        flush=True,
    )
    if case == "success":
        path = edit()
        print(f"Adding the note.\nApplied edit to {path}", flush=True)
        print("Tokens: 2.5k sent, 120 received. Cost: $0.0012 message, $0.0030 session.", flush=True)
    elif case == "rate_limit":
        print(
            "litellm.RateLimitError: AnthropicException - rate_limit_error\n"
            "The API provider has rate limited "
            "you. Try again later or check your quotas.",
            flush=True,
        )
    elif case == "auth":
        print("litellm.AuthenticationError: AnthropicException - invalid x-api-key", flush=True)
    elif case == "question":
        print("Which rounding mode do you want, half-up or banker's?", flush=True)
    elif case == "silent":
        return silent()
    return 0  # aider exits 0 whatever happened


def silent() -> int:
    time.sleep(float(os.environ.get("FAKE_AGENT_SILENCE", "30")))
    return 0


def main() -> int:
    with (Path.home() / "fake-agent-argv.jsonl").open("a") as record:
        record.write(json.dumps({"kind": KIND, "argv": ARGS}) + "\n")
    handler = {"claude": claude, "codex": codex, "gemini": gemini, "aider": aider}[KIND]
    return handler(scenario())


if __name__ == "__main__":
    sys.exit(main())

"""Our own model APIs on 127.0.0.1 for the real agent CLIs: Anthropic Messages, OpenAI Responses and Chat
Completions, and Gemini generateContent, each as its vendor serves it, so Claude Code, Codex, Gemini CLI and
aider can run headless against it (tests/agents/test_real_clis.py).

Spoken here, with the vendors' real shapes:

- Anthropic `POST /v1/messages` (SSE: message_start, content_block_start/delta/stop with text_delta and
  input_json_delta for tool_use, message_delta with usage, message_stop; or one JSON message) and
  `POST /v1/messages/count_tokens`. Errors `{"type":"error","error":{type,message},"request_id"}` with
  `request-id`, `retry-after` and `anthropic-ratelimit-*` headers (RFC 3339 resets; the subscription
  `anthropic-ratelimit-unified-*` family in epoch seconds).
- OpenAI `POST /v1/responses` (SSE: response.created, response.output_item.added/done, output_text deltas,
  response.completed with usage; function_call and custom_tool_call items) and `POST /v1/chat/completions`
  (JSON or SSE chunks ending `data: [DONE]`), `GET /v1/models`. Errors `{"error":{message,type,param,code}}`
  with `retry-after`, `x-ratelimit-*` and `x-request-id`.
- Gemini `POST /v1beta/models/<model>:streamGenerateContent?alt=sse` and `:generateContent` (candidates with
  text or functionCall parts, usageMetadata), `:countTokens`. Errors `{"error":{code,message,status,details}}`
  with google.rpc QuotaFailure / ErrorInfo / RetryInfo details.

A test scripts what the *agent's* model calls get, in order (`script(...)`): Say (text), Edit (a tool call
that writes a file, through whichever edit tool the CLI offered), Run (a shell tool call), or a Failure
(429 with Retry-After, 401, 529 overloaded, a usage limit with its reset, a daily quota, no credits...).
After the script, every agent call gets "Done." Side calls a CLI makes for itself (titles, routing, quota
probes: no tools offered, or a JSON schema asked for) never consume the script; they get a small valid
answer. Every request and every usage reported is recorded, so tests can compare tokens.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Api = Literal["anthropic", "responses", "chat", "gemini"]
FailureKind = Literal[
    "rate_limit",  # 429 with Retry-After: a short throttle
    "overloaded",  # 529 (Anthropic) / 503 (others)
    "auth",  # 401 invalid key
    "usage_limit",  # the plan's limit, with its reset `reset_in` seconds from now
    "daily_quota",  # Gemini's per-day quota (RESOURCE_EXHAUSTED, PerDay quota id)
    "insufficient_quota",  # OpenAI: no credits / billing (429 insufficient_quota)
    "credit_balance",  # Anthropic: 400 "Your credit balance is too low"
    "server_error",  # 500
]
KEY = "sk-test-fake-model-api-key-0123456789"


@dataclass
class Say:
    text: str
    input_tokens: int = 100
    output_tokens: int = 20


@dataclass
class Edit:
    """A tool call that writes `content` to `path` (relative to the worktree)."""

    path: str
    content: str
    input_tokens: int = 120
    output_tokens: int = 30


@dataclass
class Run:
    """A tool call that runs a shell command."""

    command: str
    input_tokens: int = 110
    output_tokens: int = 15


@dataclass
class Failure:
    kind: FailureKind
    retry_after: float | None = None  # seconds in Retry-After (and RetryInfo for Gemini)
    reset_in: float = 3600.0  # usage limits: seconds until the reset
    message: str | None = None  # overrides the vendor's default message


Step = Say | Edit | Run | Failure


@dataclass
class Served:
    """One request: its API, whether it was the agent's (scripted) call, and what it got."""

    api: Api
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    agent_call: bool
    status: int = 200
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class ModelAPIs:
    """One fake for all four APIs; `script(...)` queues what the next agent calls get."""

    model: str = "fake-model"
    key: str = KEY
    steps: list[Step] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    port: int = 0

    def script(self, *steps: Step) -> None:
        with self.lock:
            self.steps.extend(steps)

    def agent_calls(self, api: Api | None = None) -> list[Served]:
        with self.lock:
            return [s for s in self.served if s.agent_call and (api is None or s.api == api)]

    def tokens(self, api: Api | None = None) -> tuple[int, int]:
        """Input and output tokens reported on successful calls (side calls included)."""
        with self.lock:
            done = [s for s in self.served if s.status == 200 and (api is None or s.api == api)]
            return sum(s.input_tokens for s in done), sum(s.output_tokens for s in done)

    def pending(self) -> int:
        with self.lock:
            return len(self.steps)

    def _next(self) -> Step:
        with self.lock:
            return self.steps.pop(0) if self.steps else Say("Done.")

    def _log(self, served: Served) -> Served:
        with self.lock:
            self.served.append(served)
        return served


# ------------------------------------------------------------------------------------------ helpers


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


# --------------------------------------------------------------------------------------- HTTP layer


class _Reply:
    """What a handler sends: a JSON body, or SSE events, with status and headers."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler

    def json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.handler.send_header(key, value)
        self.handler.end_headers()
        self.handler.wfile.write(data)

    def sse(self, events: list[tuple[str | None, Any]], headers: dict[str, str] | None = None) -> None:
        """`event: NAME` (when named) + `data: JSON` blocks; a str payload is sent as is ([DONE])."""
        self.handler.send_response(200)
        self.handler.send_header("Content-Type", "text/event-stream")
        self.handler.send_header("Cache-Control", "no-cache")
        self.handler.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            self.handler.send_header(key, value)
        self.handler.end_headers()
        for name, payload in events:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            block = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
            raw = block.encode()
            self.handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.handler.wfile.flush()
        self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()


def _handler_for(fake: ModelAPIs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {}
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with suppress(BrokenPipeError, ConnectionResetError):
                route(fake, _Reply(self), method, url.path, parse_qs(url.query), headers, body)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A CLI that hangs up (it was killed, or gave up) is not an error of the fake."""


@contextmanager
def serve(fake: ModelAPIs | None = None) -> Iterator[ModelAPIs]:
    """Run the fake on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    fake = fake or ModelAPIs()
    httpd = _Server(("127.0.0.1", 0), _handler_for(fake))
    fake.port = int(httpd.server_address[1])
    fake.url = f"http://127.0.0.1:{fake.port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def route(
    fake: ModelAPIs,
    reply: _Reply,
    method: str,
    path: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: dict[str, Any],
) -> None:
    path = path.rstrip("/")
    if path.endswith("/messages/count_tokens"):
        return reply.json(200, {"input_tokens": 100})
    if path.endswith("/v1/messages"):
        return _anthropic(fake, reply, path, headers, body)
    if path.endswith("/responses"):
        return _responses(fake, reply, path, headers, body)
    if path.endswith("/chat/completions"):
        return _chat(fake, reply, path, headers, body)
    if found := re.search(r"/models/(?P<model>[^/:]+):(?P<verb>\w+)$", path):
        return _gemini(fake, reply, path, found["model"], found["verb"], query, headers, body)
    if path.endswith("/models"):
        data = [{"id": fake.model, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}]
        return reply.json(200, {"object": "list", "data": data, "models": [{"slug": fake.model}]})
    if method == "HEAD" or path in ("", "/"):
        return reply.json(200, {})
    return reply.json(404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})


# --------------------------------------------------------------------------------------- Anthropic

_ANTHROPIC_ERRORS: dict[FailureKind, tuple[int, str, str]] = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 output tokens per minute. "
        "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "usage_limit": (429, "rate_limit_error", "This request would exceed your account's rate limit."),
    "credit_balance": (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
        "upgrade or purchase credits.",
    ),
    "server_error": (500, "api_error", "Internal server error"),
    "insufficient_quota": (429, "rate_limit_error", "You have reached your specified API usage limits."),
    "daily_quota": (429, "rate_limit_error", "You have reached your specified API usage limits."),
}


def _anthropic_headers(request_id: str, limited: Failure | None) -> dict[str, str]:
    now = time.time()
    headers = {"request-id": request_id, "anthropic-organization-id": "00000000-fake-org"}
    reset = now + (limited.reset_in if limited and limited.kind == "usage_limit" else 60)
    for family in ("requests", "tokens", "input-tokens", "output-tokens"):
        headers[f"anthropic-ratelimit-{family}-limit"] = "4000"
        remaining = "0" if limited and limited.kind in ("rate_limit", "usage_limit") else "3999"
        headers[f"anthropic-ratelimit-{family}-remaining"] = remaining
        headers[f"anthropic-ratelimit-{family}-reset"] = _iso(reset)
    if limited and limited.kind == "usage_limit":  # the subscription (OAuth) family: epoch seconds
        headers.update(
            {
                "anthropic-ratelimit-unified-status": "rejected",
                "anthropic-ratelimit-unified-reset": str(int(reset)),
                "anthropic-ratelimit-unified-representative-claim": "five_hour",
                "anthropic-ratelimit-unified-5h-status": "rejected",
                "anthropic-ratelimit-unified-5h-reset": str(int(reset)),
                "anthropic-ratelimit-unified-5h-utilization": "1.0",
                "anthropic-ratelimit-unified-fallback-percentage": "0.5",
                "anthropic-ratelimit-unified-overage-status": "rejected",
                "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
            }
        )
    elif not limited:
        headers["anthropic-ratelimit-unified-status"] = "allowed"
        headers["anthropic-ratelimit-unified-reset"] = str(int(now + 5 * 3600))
    return headers


def _anthropic_key_ok(fake: ModelAPIs, headers: dict[str, str]) -> bool:
    bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
    return fake.key in (headers.get("x-api-key"), bearer)


def _anthropic(
    fake: ModelAPIs, reply: _Reply, path: str, headers: dict[str, str], body: dict[str, Any]
) -> None:
    agent = bool(body.get("tools")) and int(body.get("max_tokens") or 0) > 1
    served = fake._log(Served("anthropic", path, body, headers, agent))
    request_id = _id("req_011C")
    step: Step = fake._next() if agent else Say("OK", input_tokens=10, output_tokens=2)
    if not _anthropic_key_ok(fake, headers):
        step = Failure("auth")
    if isinstance(step, Failure):
        status, kind, message = _ANTHROPIC_ERRORS[step.kind]
        out = _anthropic_headers(request_id, step)
        if step.retry_after is not None:
            out["retry-after"] = f"{step.retry_after:g}"
        if step.kind == "usage_limit" and step.retry_after is None:
            out["retry-after"] = str(int(step.reset_in))
        served.status = status
        payload = {"type": "error", "error": {"type": kind, "message": step.message or message}}
        return reply.json(status, {**payload, "request_id": request_id}, out)
    served.input_tokens, served.output_tokens = step.input_tokens, step.output_tokens
    blocks = _anthropic_blocks(step, body)
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    usage: dict[str, Any] = {
        "input_tokens": step.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": step.output_tokens,
        "service_tier": "standard",
    }
    answer: dict[str, Any] = {
        "id": _id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or fake.model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    out = _anthropic_headers(request_id, None)
    if not body.get("stream"):
        return reply.json(200, answer, out)
    start = {**answer, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks):
        empty: dict[str, Any]
        delta: dict[str, Any]
        if block["type"] == "text":
            empty = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": step.output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    reply.sse(events, out)


def _anthropic_blocks(step: Say | Edit | Run, body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = {str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)}
    if isinstance(step, Say):
        return [{"type": "text", "text": step.text}]
    if isinstance(step, Edit):
        name = "Write" if "Write" in tools or not tools else sorted(tools)[0]
        call = {"file_path": step.path, "content": step.content}
        text = f"I'll write {step.path}."
    else:
        name, call, text = "Bash", {"command": step.command, "description": "Run it"}, "Running it."
    tool_use = {"type": "tool_use", "id": _id("toolu_01"), "name": name, "input": call}
    return [{"type": "text", "text": text}, tool_use]


# ------------------------------------------------------------------------------------------- OpenAI

_OPENAI_ERRORS: dict[FailureKind, tuple[int, str, str | None, str]] = {
    "rate_limit": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.",
    ),
    "overloaded": (503, "server_error", "server_is_overloaded", "The server is overloaded, try again later."),
    "auth": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-wrong. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "insufficient_quota": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details. For more information "
        "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
    ),
    "usage_limit": (429, "usage_limit_reached", "usage_limit_reached", "The usage limit has been reached"),
    "server_error": (500, "server_error", None, "The server had an error while processing your request."),
    "credit_balance": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "daily_quota": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests per day (RPD)."),
}


def _openai_error(fake: ModelAPIs, reply: _Reply, served: Served, failure: Failure) -> None:
    status, kind, code, message = _OPENAI_ERRORS[failure.kind]
    error: dict[str, Any] = {"message": failure.message or message, "type": kind, "param": None, "code": code}
    headers = {"x-request-id": _id("req"), "x-ratelimit-limit-requests": "3"}
    if failure.kind == "usage_limit":
        reset = time.time() + failure.reset_in
        error.update(
            {"plan_type": "plus", "resets_at": int(reset), "resets_in_seconds": int(failure.reset_in)}
        )
        headers.update(
            {
                "x-codex-primary-used-percent": "100.0",
                "x-codex-primary-window-minutes": "300",
                "x-codex-primary-reset-after-seconds": str(int(failure.reset_in)),
                "x-codex-primary-reset-at": str(int(reset)),
            }
        )
    if failure.kind in ("rate_limit", "daily_quota"):
        headers.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"})
    if failure.retry_after is not None:
        headers["retry-after"] = f"{failure.retry_after:g}"
        headers["retry-after-ms"] = str(int(failure.retry_after * 1000))
    served.status = status
    reply.json(status, {"error": error}, headers)


def _openai_key_ok(fake: ModelAPIs, headers: dict[str, str]) -> bool:
    return headers.get("authorization", "").removeprefix("Bearer ").strip() == fake.key


def _tool_names(body: dict[str, Any]) -> dict[str, str]:
    """Offered tool name -> its type (function, custom, local_shell...) in a Responses/Chat request."""
    names: dict[str, str] = {}
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        name = tool.get("name") or (tool.get("function") or {}).get("name") or tool.get("type")
        names[str(name)] = str(tool.get("type"))
    return names


def _apply_patch(path: str, content: str) -> str:
    added = "".join(f"+{line}\n" for line in content.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{added}*** End Patch\n"


def _responses(
    fake: ModelAPIs, reply: _Reply, path: str, headers: dict[str, str], body: dict[str, Any]
) -> None:
    agent = bool(body.get("tools"))
    served = fake._log(Served("responses", path, body, headers, agent))
    step: Step = fake._next() if agent else Say('{"title": "Fake task"}', 10, 5)
    if not _openai_key_ok(fake, headers):
        step = Failure("auth")
    if isinstance(step, Failure):
        return _openai_error(fake, reply, served, step)
    served.input_tokens, served.output_tokens = step.input_tokens, step.output_tokens
    response_id = _id("resp")
    items = _response_items(step, _tool_names(body))
    base = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": body.get("model"),
    }
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "response": {**base, "status": "in_progress"}}),
    ]
    for index, item in enumerate(items):
        events.append(
            (
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": index, "item": item},
            )
        )
        if item["type"] == "message":
            text = item["content"][0]["text"]
            delta = {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "delta": text,
            }
            events.append(("response.output_text.delta", delta))
        events.append(
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": index, "item": item},
            )
        )
    usage = {
        "input_tokens": step.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": step.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": step.input_tokens + step.output_tokens,
    }
    done = {**base, "status": "completed", "output": items, "usage": usage}
    events.append(("response.completed", {"type": "response.completed", "response": done}))
    reply.sse(events, {"x-request-id": _id("req")})


def _response_items(step: Say | Edit | Run, tools: dict[str, str]) -> list[dict[str, Any]]:
    def message(text: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        return {
            "type": "message",
            "id": _id("msg"),
            "role": "assistant",
            "status": "completed",
            "content": content,
        }

    if isinstance(step, Say):
        return [message(step.text)]
    call_id = _id("call")
    if isinstance(step, Edit):
        patch = _apply_patch(step.path, step.content)
        if tools.get("apply_patch") == "custom":
            item = {
                "type": "custom_tool_call",
                "id": _id("ctc"),
                "status": "completed",
                "call_id": call_id,
                "name": "apply_patch",
                "input": patch,
            }
        elif "apply_patch" in tools:
            item = {
                "type": "function_call",
                "id": _id("fc"),
                "status": "completed",
                "call_id": call_id,
                "name": "apply_patch",
                "arguments": json.dumps({"input": patch}),
            }
        else:
            return [_shell_call(f"apply_patch <<'EOF'\n{patch}EOF", tools, call_id)]
        return [item]
    return [_shell_call(step.command, tools, call_id)]


def _shell_call(command: str, tools: dict[str, str], call_id: str) -> dict[str, Any]:
    for name in ("exec_command", "shell_command", "shell"):
        if name in tools:
            arguments = (
                {"cmd": command}
                if name == "exec_command"
                else {"command": command}
                if name == "shell_command"
                else {"command": ["bash", "-lc", command]}
            )
            return {
                "type": "function_call",
                "id": _id("fc"),
                "status": "completed",
                "call_id": call_id,
                "name": name,
                "arguments": json.dumps(arguments),
            }
    raise ValueError(f"no shell tool offered (tools: {sorted(tools)})")


def _chat(fake: ModelAPIs, reply: _Reply, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
    """Chat Completions: aider's API (its edits are SEARCH/REPLACE blocks or whole files in the text)."""
    messages = body.get("messages") or []
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    agent = bool(body.get("tools")) or "SEARCH/REPLACE" in system or "file listing" in system
    served = fake._log(Served("chat", path, body, headers, agent))
    step: Step = fake._next() if agent else Say("OK", 10, 2)
    if not _openai_key_ok(fake, headers):
        step = Failure("auth")
    if isinstance(step, Failure):
        return _openai_error(fake, reply, served, step)
    served.input_tokens, served.output_tokens = step.input_tokens, step.output_tokens
    if isinstance(step, Edit):
        text = _aider_edit(step, system)
    elif isinstance(step, Run):
        text = f"Run this:\n\n```bash\n{step.command}\n```\n"
    else:
        text = step.text
    usage = {
        "prompt_tokens": step.input_tokens,
        "completion_tokens": step.output_tokens,
        "total_tokens": step.input_tokens + step.output_tokens,
    }
    chat_id, created, model = _id("chatcmpl"), int(time.time()), body.get("model") or fake.model
    if not body.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        payload = {
            "id": chat_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        return reply.json(200, payload, {"x-request-id": _id("req")})
    chunk = {"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model}
    events: list[tuple[str | None, Any]] = [
        (None, {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {**chunk, "choices": [], "usage": usage}),
        (None, "[DONE]"),
    ]
    reply.sse(events)


def _aider_edit(step: Edit, system: str) -> str:
    if "SEARCH/REPLACE" in system:
        body = step.content.rstrip("\n")
        return (
            f"I'll create {step.path}.\n\n{step.path}\n```\n<<<<<<< SEARCH\n=======\n{body}\n"
            ">>>>>>> REPLACE\n```\n"
        )
    return f"I'll create {step.path}.\n\n{step.path}\n```\n{step.content.rstrip()}\n```\n"


# ------------------------------------------------------------------------------------------- Gemini

_GEMINI_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"


def _gemini_tools(body: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or []:
        for declaration in (tool or {}).get("functionDeclarations") or []:
            names.add(str(declaration.get("name")))
    return names


def _gemini_error(reply: _Reply, served: Served, failure: Failure, model: str) -> None:
    details: list[dict[str, Any]] = []
    status, code = "RESOURCE_EXHAUSTED", 429
    if failure.kind in ("rate_limit", "daily_quota", "usage_limit", "insufficient_quota"):
        per_day = failure.kind in ("daily_quota", "usage_limit", "insufficient_quota")
        quota_id = (
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
            if per_day
            else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        )
        message = failure.message or (
            f"You exceeded your current quota, please check your plan and billing details. For more "
            f"information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
            f"* Quota exceeded for metric: {_GEMINI_METRIC}, limit: {50 if per_day else 10}, model: {model}"
        )
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _GEMINI_METRIC,
                        "quotaId": quota_id,
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "50" if per_day else "10",
                    }
                ],
            }
        )
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            }
        )
        if failure.retry_after is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{failure.retry_after:g}s",
                }
            )
    elif failure.kind == "auth":
        status, code = "INVALID_ARGUMENT", 400
        message = failure.message or "API key not valid. Please pass a valid API key."
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
    elif failure.kind == "overloaded":
        status, code = "UNAVAILABLE", 503
        message = failure.message or "The model is overloaded. Please try again later."
    else:
        status, code = "INTERNAL", 500
        message = failure.message or "An internal error has occurred."
    served.status = code
    headers = {"retry-after": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
    reply.json(
        code, {"error": {"code": code, "message": message, "status": status, "details": details}}, headers
    )


def _gemini(
    fake: ModelAPIs,
    reply: _Reply,
    path: str,
    model: str,
    verb: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: dict[str, Any],
) -> None:
    if verb == "countTokens":
        return reply.json(200, {"totalTokens": 100})
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    agent = bool(body.get("tools")) and not schema
    served = fake._log(Served("gemini", path, body, headers, agent))
    step: Step = fake._next() if agent else Say(json.dumps(_fill(schema)) if schema else "OK", 10, 5)
    key = headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
    if key != fake.key:
        step = Failure("auth")
    if isinstance(step, Failure):
        return _gemini_error(reply, served, step, model)
    served.input_tokens, served.output_tokens = step.input_tokens, step.output_tokens
    parts: list[dict[str, Any]]
    tools = _gemini_tools(body)
    if isinstance(step, Edit):
        name = "write_file" if "write_file" in tools or not tools else sorted(tools)[0]
        parts = [{"functionCall": {"name": name, "args": {"file_path": step.path, "content": step.content}}}]
    elif isinstance(step, Run):
        parts = [{"functionCall": {"name": "run_shell_command", "args": {"command": step.command}}}]
    else:
        parts = [{"text": step.text}]
    usage = {
        "promptTokenCount": step.input_tokens,
        "candidatesTokenCount": step.output_tokens,
        "totalTokenCount": step.input_tokens + step.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": step.input_tokens}],
    }
    candidate = {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}
    response = {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": uuid.uuid4().hex[:22],
    }
    if verb == "generateContent":
        return reply.json(200, response)
    reply.sse([(None, response)])


def _fill(schema: dict[str, Any] | None) -> Any:
    """A small value valid against a JSON schema (Gemini CLI's routing and next-speaker side calls)."""
    if not schema:
        return {}
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        options = [str(o) for o in schema["enum"]]
        return "user" if "user" in options else options[0]
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _fill(sub) for name, sub in properties.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return "fake"

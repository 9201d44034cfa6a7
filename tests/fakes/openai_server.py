"""Our own OpenAI-compatible server on 127.0.0.1 (the subset vLLM, llama-server and LM Studio share).

POST /v1/chat/completions (JSON, or SSE `data:` lines ending in `data: [DONE]` with a usage chunk),
GET /v1/models, GET /health (llama-server's). Errors use OpenAI's {"error": {message, type, code}}
shape; 429s carry Retry-After and x-ratelimit-reset-* (Go durations), usage limits also
anthropic-ratelimit-tokens-reset (RFC 3339). Scripted exactly like tests/fakes/ollama_server.py.
"""

from __future__ import annotations

import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.ollama_server import (
    BUSY_MESSAGE,
    LOAD_FAILURE_MESSAGE,
    Fault,
    Reply,
    ScriptedModelServer,
    _send_json,
    _send_stream,
    reset_iso,
    usage_message,
)


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeOpenAI(ScriptedModelServer):
    loading: bool = False  # /health answers 503 "Loading model" like llama-server

    def handle(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: dict[str, Any]) -> None:
        limited = self.record(path, body)
        if method == "GET" and path == "/health":
            if self.loading:
                payload = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
                return _send_json(handler, 503, payload)
            return _send_json(handler, 200, {"status": "ok"})
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "me"} for m in self.models
            ]
            return _send_json(handler, 200, {"object": "list", "data": data})
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(handler, body, limited)
        return _send_json(handler, 404, _error("not found", "not_found_error"))

    def _limit_headers(self, reset: float) -> dict[str, str]:
        seconds = max(0.0, reset - time.time())
        return {
            "Retry-After": f"{seconds:.3f}",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": f"{seconds:.3f}s",
            "anthropic-ratelimit-tokens-reset": reset_iso(reset),
        }

    def _chat(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], limited: bool) -> None:
        model = str(body.get("model", ""))
        if limited:
            payload = _error(usage_message(self.limit_until), "insufficient_quota", "insufficient_quota")
            return _send_json(handler, 429, payload, self._limit_headers(self.limit_until))
        if model not in self.models:
            return _send_json(
                handler,
                404,
                _error(f"The model `{model}` does not exist.", "not_found_error", "model_not_found"),
            )
        item = self.next_for(model, body)
        if isinstance(item, Fault):
            return self._fault(handler, item, model)
        if body.get("stream"):
            return _send_stream(handler, _sse(item, model), "text/event-stream")
        _send_json(handler, 200, _completion(item, model))

    def _fault(self, handler: BaseHTTPRequestHandler, fault: Fault, model: str) -> None:
        if fault.kind == "hang":
            self.wait_or_stop(fault.seconds)
            return _send_json(handler, 200, _completion(Reply(content="late"), model))
        if fault.kind == "midstream_error":
            lines = _sse(Reply(content="partial"), model)[:1]
            lines.append("data: " + json.dumps(_error("upstream model crashed", "server_error")))
            return _send_stream(handler, lines, "text/event-stream")
        if fault.kind == "malformed":
            return _send_stream(handler, ['data: {"id": "x", "choices": [{"delta": '], "text/event-stream")
        if fault.kind == "usage_limit":
            reset = self.limit_for(fault.seconds)
            payload = _error(usage_message(reset), "insufficient_quota", "insufficient_quota")
            return _send_json(handler, 429, payload, self._limit_headers(reset))
        status, headers, payload = {
            "model_missing": (
                404,
                {},
                _error(f"model {model} not found", "not_found_error", "model_not_found"),
            ),
            "load_failure": (500, {}, _error(LOAD_FAILURE_MESSAGE, "api_error")),
            "busy": (503, {}, _error(BUSY_MESSAGE, "unavailable_error")),
            "rate_limited": (
                429,
                {"Retry-After": f"{fault.seconds:g}", "x-ratelimit-reset-requests": f"{fault.seconds:g}s"},
                _error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            ),
            "context": (
                400,
                {},
                _error(
                    "This model's maximum context length is 4096 tokens.",
                    "invalid_request_error",
                    "context_length_exceeded",
                ),
            ),
            "auth": (
                401,
                {},
                _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
            ),
        }[fault.kind]
        _send_json(handler, status, payload, headers)


def _message(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    return message


def _usage(reply: Reply) -> dict[str, int]:
    total = reply.prompt_tokens + reply.completion_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": total,
    }


def _completion(reply: Reply, model: str) -> dict[str, Any]:
    finish = "tool_calls" if reply.tool_calls else ("length" if reply.done_reason == "length" else "stop")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": _message(reply), "finish_reason": finish}],
        "usage": _usage(reply),
    }


def _sse(reply: Reply, model: str) -> list[str]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk", "model": model}
    pieces = [reply.content[i : i + 16] for i in range(0, len(reply.content), 16)]
    lines = [
        "data: "
        + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
        for p in pieces
    ]
    if reply.tool_calls:
        calls = [
            {
                "index": i,
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
        lines.append(
            "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
        )
    finish = "tool_calls" if reply.tool_calls else "stop"
    lines.append(
        "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    )
    lines.append("data: " + json.dumps({**base, "choices": [], "usage": _usage(reply)}))
    lines.append("data: [DONE]")
    return [line + "\n" for line in lines]

"""OpenAI-compatible chat servers over httpx: vLLM, llama.cpp's llama-server, LM Studio, hosted APIs.

No SDK: we want the headers (Retry-After, x-ratelimit-reset-*, anthropic-ratelimit-*-reset) and no
hidden retries multiplying Temporal's own.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from activities.llm.base import ChatReply, ChatRequest, ErrorKind, ModelError, ToolCall, tls_context
from activities.llm.headers import limit_error_fields, reset_from_headers, reset_from_text

_CONTEXT_CODES = ("context_length_exceeded", "string_above_max_length")
_CONTEXT_WORDS = ("maximum context length", "context length", "too many tokens", "exceeds the context")


class OpenAICompatClient:
    def __init__(
        self,
        endpoint: str,
        base_url: str,
        *,
        context_window: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        api_key: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.context_window = context_window
        root = base_url.rstrip("/")
        self._root = root[: -len("/v1")] if root.endswith("/v1") else root
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self._root,
            headers=headers,
            verify=tls_context(),
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=30.0, pool=30.0),
        )

    async def chat(self, request: ChatRequest) -> ChatReply:
        started = time.monotonic()
        try:
            if request.stream:
                reply = await self._streamed(request)
            else:
                response = await self._http.post("/v1/chat/completions", json=self._body(request))
                self._raise_for_status(response, request.model)
                reply = _reply_from(response.json(), request.model)
        except ModelError:
            raise
        except httpx.TimeoutException as exc:
            raise self._error("timeout", f"no answer in time ({type(exc).__name__})", request.model) from exc
        except httpx.ConnectError as exc:
            raise self._error("unreachable", f"cannot connect: {exc}", request.model) from exc
        except (httpx.HTTPError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise self._error("stream_error", f"broken response: {exc!r}", request.model) from exc
        reply.latency_seconds = round(time.monotonic() - started, 3)
        return reply

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": _wire(request.messages),
            "temperature": request.temperature,
            "max_tokens": request.max_output_tokens,
            "stream": request.stream,
        }
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": request.schema, "strict": True},
            }
        if request.tools:
            body["tools"] = request.tools
        return body

    async def _streamed(self, request: ChatRequest) -> ChatReply:
        content: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        finish = ""
        async with self._http.stream("POST", "/v1/chat/completions", json=self._body(request)) as response:
            if response.status_code >= 400:
                await response.aread()
                self._raise_for_status(response, request.model)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finish = finish or "stop"
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise self._error("stream_error", _message(chunk), request.model)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    content.append(delta.get("content") or "")
                    for call in delta.get("tool_calls") or []:
                        slot = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                        function = call.get("function") or {}
                        slot["name"] += function.get("name") or ""
                        slot["arguments"] += function.get("arguments") or ""
                        slot["id"] = call.get("id") or slot.get("id")
                    finish = choice.get("finish_reason") or finish
        if not finish:
            raise self._error("stream_error", "the stream ended without [DONE]", request.model)
        return ChatReply(
            content="".join(content),
            model=request.model,
            tool_calls=[_tool_call(c["name"], c["arguments"], c.get("id")) for c in calls.values()],
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            done_reason=finish,
        )

    def _raise_for_status(self, response: httpx.Response, model: str) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:300]}}
        kind, message, retry_after, reset_at = _classify(response.status_code, body, response.headers)
        raise ModelError(
            kind, message, model=model, endpoint=self.endpoint, retry_after=retry_after, reset_at=reset_at
        )

    def _error(self, kind: ErrorKind, message: str, model: str) -> ModelError:
        return ModelError(kind, message, model=model, endpoint=self.endpoint)

    async def probe(self) -> None:
        """llama-server answers /health (503 while loading); others only /v1/models."""
        try:
            response = await self._http.get("/health")
            if response.status_code == 404:
                response = await self._http.get("/v1/models")
        except httpx.TimeoutException as exc:
            raise self._error("timeout", f"health probe timed out: {exc!r}", "") from exc
        except httpx.HTTPError as exc:
            raise self._error("unreachable", f"health probe failed: {exc!r}", "") from exc
        if response.status_code in (401, 403):
            raise self._error("auth", f"health probe answered {response.status_code}", "")
        if response.status_code != 200:
            kind: ErrorKind = "overloaded" if response.status_code == 503 else "server_error"
            raise self._error(kind, f"health probe answered {response.status_code}", "")

    async def aclose(self) -> None:
        await self._http.aclose()


def _wire(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our messages use Ollama's tool shapes; OpenAI wants ids, string arguments and tool_call_id."""
    wired: list[dict[str, Any]] = []
    pending: list[str] = []
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls: list[dict[str, Any]] = []
            for call in message["tool_calls"]:
                call_id = f"call_{len(wired)}_{len(calls)}"
                pending.append(call_id)
                function = call["function"]
                arguments = function.get("arguments")
                text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": function["name"], "arguments": text},
                    }
                )
            wired.append(
                {"role": "assistant", "content": message.get("content") or None, "tool_calls": calls}
            )
        elif message.get("role") == "tool":
            call_id = pending.pop(0) if pending else "call_unknown"
            wired.append({"role": "tool", "tool_call_id": call_id, "content": message.get("content", "")})
        else:
            wired.append(message)
    return wired


def _message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    return str(error or body)[:300]


def _classify(
    status: int, body: dict[str, Any], headers: httpx.Headers
) -> tuple[ErrorKind, str, float | None, datetime | None]:
    now = datetime.now(UTC)
    message = _message(body)
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = str((error or {}).get("code") or "") + " " + str((error or {}).get("type") or "")
    if any(c in code for c in _CONTEXT_CODES) or any(w in message.lower() for w in _CONTEXT_WORDS):
        return "context_exceeded", message, None, None
    if status == 429 or "rate_limit" in code or "insufficient_quota" in code:
        reset_at = reset_from_headers(dict(headers), now) or reset_from_text(message, now)
        kind, retry_after = limit_error_fields(f"{message} {code}", reset_at, now)
        return ("usage_limit" if kind == "usage_limit" else "rate_limited"), message, retry_after, reset_at
    simple: dict[int, ErrorKind] = {
        400: "bad_request",
        401: "auth",
        403: "auth",
        404: "model_missing",
        408: "timeout",
        413: "context_exceeded",
        422: "bad_request",
        502: "server_error",
        503: "overloaded",  # llama-server while loading, proxies in front of busy servers
        504: "timeout",
        529: "overloaded",
    }
    return simple.get(status, "server_error"), message, None, None


def _tool_call(name: str, arguments: str | dict[str, Any], call_id: str | None) -> ToolCall:
    if isinstance(arguments, dict):
        return ToolCall(name=name, arguments=arguments, id=call_id)
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        parsed = {"_unparsed": arguments}
    return ToolCall(
        name=name, arguments=parsed if isinstance(parsed, dict) else {"value": parsed}, id=call_id
    )


def _reply_from(body: dict[str, Any], model: str) -> ChatReply:
    choice = body["choices"][0]
    message = choice.get("message") or {}
    usage = body.get("usage") or {}
    calls = [
        _tool_call(c["function"]["name"], c["function"].get("arguments") or "{}", c.get("id"))
        for c in message.get("tool_calls") or []
    ]
    return ChatReply(
        content=message.get("content") or "",
        model=body.get("model") or model,
        tool_calls=calls,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        done_reason=choice.get("finish_reason") or "stop",
    )

"""Ollama's native API through the official `ollama` AsyncClient.

The client's default timeout is none (wait forever), so every client gets explicit httpx timeouts; every
chat sends num_ctx (Ollama otherwise picks a VRAM-dependent default and silently truncates) and
keep_alive. Failures are mapped onto the taxonomy in base.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import ollama

from activities.llm.base import ChatReply, ChatRequest, ErrorKind, ModelError, ToolCall, tls_context
from activities.llm.headers import limit_error_fields, reset_from_headers, reset_from_text

_CONTEXT_WORDS = ("context length", "context window", "exceeds the context", "too many tokens")


class OllamaClient:
    def __init__(
        self,
        endpoint: str,
        base_url: str,
        *,
        num_ctx: int,
        keep_alive: str = "30m",
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        api_key: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.base_url = base_url
        self.context_window: int | None = num_ctx
        self._keep_alive = keep_alive
        # Ollama never sends Retry-After itself, but proxies and Ollama Cloud may: keep the last error's
        # headers, because ollama.ResponseError drops them.
        self._error_headers: dict[str, str] = {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._client = ollama.AsyncClient(
            host=base_url,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=30.0, pool=30.0),
            headers=headers,
            verify=tls_context(),
            event_hooks={"response": [self._remember_error_headers]},
        )

    async def _remember_error_headers(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            self._error_headers = dict(response.headers)

    async def chat(self, request: ChatRequest) -> ChatReply:
        started = time.monotonic()
        self._error_headers = {}
        try:
            if request.stream:
                reply = await self._streamed(request)
            else:
                response = await self._client.chat(**self._arguments(request), stream=False)
                reply = _reply_from(response, request.model)
        except ModelError:
            raise
        except Exception as exc:
            raise self._classify(exc, request.model) from exc
        reply.latency_seconds = round(time.monotonic() - started, 3)
        return reply

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_ctx": self.context_window,
            "temperature": request.temperature,
            "num_predict": request.max_output_tokens,
        }
        return {
            "model": request.model,
            "messages": request.messages,
            "tools": request.tools,
            "format": request.schema,
            "options": options,
            "keep_alive": self._keep_alive,
        }

    async def _streamed(self, request: ChatRequest) -> ChatReply:
        parts: AsyncIterator[ollama.ChatResponse] = await self._client.chat(
            **self._arguments(request), stream=True
        )
        content: list[str] = []
        calls: list[ToolCall] = []
        last: ollama.ChatResponse | None = None
        async for part in parts:
            content.append(part.message.content or "")
            calls.extend(_tool_calls(part))
            last = part
        if last is None or not last.done:
            raise ModelError("stream_error", "the stream ended before its final chunk", model=request.model)
        reply = _reply_from(last, request.model)
        reply.content = "".join(content)
        reply.tool_calls = calls
        return reply

    def _classify(self, exc: BaseException, model: str) -> ModelError:
        kind, message, retry_after, reset_at = _classify(exc, self._error_headers)
        return ModelError(
            kind, message, model=model, endpoint=self.endpoint, retry_after=retry_after, reset_at=reset_at
        )

    async def probe(self) -> None:
        try:
            response = await self._client._client.get("/api/version")
        except httpx.TimeoutException as exc:
            raise ModelError("timeout", f"health probe timed out: {exc!r}", endpoint=self.endpoint) from exc
        except httpx.HTTPError as exc:
            raise ModelError("unreachable", f"health probe failed: {exc!r}", endpoint=self.endpoint) from exc
        if response.status_code != 200:
            kind: ErrorKind = "overloaded" if response.status_code == 503 else "server_error"
            raise ModelError(kind, f"/api/version answered {response.status_code}", endpoint=self.endpoint)

    async def aclose(self) -> None:
        await self._client._client.aclose()


def _tool_calls(part: ollama.ChatResponse) -> list[ToolCall]:
    calls = part.message.tool_calls or []
    return [ToolCall(name=c.function.name, arguments=dict(c.function.arguments or {})) for c in calls]


def _reply_from(response: ollama.ChatResponse, model: str) -> ChatReply:
    return ChatReply(
        content=response.message.content or "",
        model=response.model or model,
        tool_calls=_tool_calls(response),
        prompt_tokens=response.prompt_eval_count or 0,
        completion_tokens=response.eval_count or 0,
        done_reason=response.done_reason or "stop",
    )


def _classify(
    exc: BaseException, headers: dict[str, str]
) -> tuple[ErrorKind, str, float | None, datetime | None]:
    """Exceptions the ollama client really raises (research/adapters.md §1.7) -> taxonomy."""
    now = datetime.now(UTC)
    if isinstance(exc, ollama.ResponseError):
        return _from_status(exc.status_code, str(exc.error), headers, now)
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"no answer in time ({type(exc).__name__})", None, None
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return "unreachable", "cannot connect to the Ollama server", None, None
    if isinstance(exc, json.JSONDecodeError | httpx.RemoteProtocolError | httpx.ReadError):
        return "stream_error", f"broken response: {exc}", None, None
    if isinstance(exc, ValueError):  # pydantic rejected our own request (e.g. an empty model name)
        return "bad_request", str(exc).splitlines()[0], None, None
    return "server_error", f"{type(exc).__name__}: {exc}", None, None


def _from_status(
    status: int, message: str, headers: dict[str, str], now: datetime
) -> tuple[ErrorKind, str, float | None, datetime | None]:
    lowered = message.lower()
    if any(word in lowered for word in _CONTEXT_WORDS):
        return "context_exceeded", message, None, None
    if status == 429:
        reset_at = reset_from_headers(headers, now) or reset_from_text(message, now)
        kind, retry_after = limit_error_fields(message, reset_at, now)
        return ("usage_limit" if kind == "usage_limit" else "rate_limited"), message, retry_after, reset_at
    simple: dict[int, ErrorKind] = {
        -1: "stream_error",  # an {"error": ...} line after a 200: the stream broke mid-way
        400: "bad_request",
        401: "auth",
        403: "auth",
        404: "model_missing",
        408: "timeout",
        502: "unreachable",  # Ollama Cloud: the upstream could not be reached
        503: "overloaded",  # queue full: "server busy, please try again.  maximum pending requests exceeded"
        504: "timeout",
    }
    return simple.get(status, "server_error"), message, None, None

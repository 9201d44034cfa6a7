"""The model layer's vocabulary: the ModelClient protocol, request/reply shapes and the one error taxonomy.

Every provider maps its failures onto ErrorKind; BEHAVIOUR is the single table that decides what each
kind does. Nothing else in the code base branches on provider-specific status codes.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

import certifi

ErrorKind = Literal[
    "model_missing",
    "bad_request",
    "overloaded",
    "server_error",
    "unreachable",
    "timeout",
    "stream_error",
    "rate_limited",
    "usage_limit",
    "context_exceeded",
    "auth",
    "invalid_output",
]


class Behaviour(StrEnum):
    NEXT_MODEL = "next model in the chain"
    BACKOFF = "back off with full jitter (a Temporal retry with next_retry_delay)"
    WAIT_RESET = "wait durably until the reset (a workflow timer)"
    FAIL_FAST = "fail fast (non-retryable)"
    SHRINK = "shrink the context and retry"


# THE table. A kind's behaviour is decided here and nowhere else.
BEHAVIOUR: dict[ErrorKind, Behaviour] = {
    "model_missing": Behaviour.NEXT_MODEL,  # 404: not pulled on this server; another model may be
    "server_error": Behaviour.NEXT_MODEL,  # 500: load failure / OOM of this model
    "unreachable": Behaviour.NEXT_MODEL,  # endpoint down: a model elsewhere may answer; the breaker opens
    "invalid_output": Behaviour.NEXT_MODEL,  # structured reply still invalid after one corrective retry
    "overloaded": Behaviour.BACKOFF,  # 503/529 busy: the same server will answer later
    "timeout": Behaviour.BACKOFF,
    "stream_error": Behaviour.BACKOFF,  # error line mid-stream or a broken stream: retry the request
    "rate_limited": Behaviour.BACKOFF,  # the server's Retry-After is the lower bound of the delay
    "usage_limit": Behaviour.WAIT_RESET,
    "bad_request": Behaviour.FAIL_FAST,  # our request is wrong; repeating it cannot help
    "auth": Behaviour.FAIL_FAST,
    "context_exceeded": Behaviour.SHRINK,
}

# A rate limit longer than this is a usage limit for our purposes: wait on a workflow timer, not a retry.
LONG_LIMIT_SECONDS = 300.0


class ModelError(Exception):
    """A provider failure, already classified."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
        reset_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.model = model
        self.endpoint = endpoint
        self.retry_after = retry_after
        self.reset_at = reset_at

    @property
    def behaviour(self) -> Behaviour:
        return BEHAVIOUR[self.kind]

    def __str__(self) -> str:
        where = f" [{self.endpoint}/{self.model}]" if self.model else ""
        return f"{self.kind}{where}: {self.message}"


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    schema: dict[str, Any] | None = None  # structured output: the reply must match this JSON schema
    tools: list[dict[str, Any]] | None = None  # OpenAI-style function definitions
    max_output_tokens: int = 2048
    stream: bool = True
    temperature: float = 0.0


@dataclass
class ChatReply:
    content: str
    model: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done_reason: str = "stop"
    latency_seconds: float = 0.0


class ModelClient(Protocol):
    """One model server. chat() raises ModelError and nothing else for provider failures."""

    endpoint: str  # the provider's name in the config, which is also the breaker and limit-gate key
    context_window: int | None  # tokens the server keeps (Ollama's num_ctx); None = the model's own

    async def chat(self, request: ChatRequest) -> ChatReply: ...

    async def probe(self) -> None:
        """A cheap health check (/api/version, /health); raises ModelError when the server is not ready."""
        ...

    async def aclose(self) -> None: ...


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: building one (what httpx does per client) costs ~45 ms of CPU
    on the event loop, which serialises concurrent model calls."""
    return ssl.create_default_context(cafile=certifi.where())

"""Context and token budgets: never send a prompt the server would silently truncate.

Ollama drops the start of a prompt that exceeds num_ctx and says so only in its own log, so we estimate
before sending, conservatively (about three bytes per token; real tokenizers average nearer four for
English and code), and refuse with context_exceeded, which the caller answers by shrinking.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from activities.llm.base import ChatRequest, ModelError

log = logging.getLogger("ticketflow.llm.budget")

BYTES_PER_TOKEN = 3.0
PER_MESSAGE_OVERHEAD = 8  # role markers and template tokens around each message
WARN_FRACTION = 0.9


def estimate_tokens(request: ChatRequest) -> int:
    """An upper-leaning estimate of the prompt's tokens, schema and tool definitions included."""
    size = 0
    for message in request.messages:
        size += len(json.dumps(message, ensure_ascii=False).encode())
    for extra in (request.schema, request.tools):
        if extra:
            size += len(json.dumps(extra).encode())
    return math.ceil(size / BYTES_PER_TOKEN) + PER_MESSAGE_OVERHEAD * len(request.messages)


def ensure_fits(request: ChatRequest, context_window: int | None, endpoint: str) -> int:
    """Raise context_exceeded if prompt + reserved output would not fit; return the estimate."""
    estimate = estimate_tokens(request)
    if context_window is None:
        return estimate
    needed = estimate + request.max_output_tokens
    if needed > context_window:
        raise ModelError(
            "context_exceeded",
            f"prompt ~{estimate} tokens + {request.max_output_tokens} for the reply exceed num_ctx "
            f"{context_window}; not sent (the server would truncate it silently)",
            model=request.model,
            endpoint=endpoint,
        )
    if needed >= WARN_FRACTION * context_window:
        log.warning(
            "%s/%s: prompt uses %d of %d context tokens", endpoint, request.model, needed, context_window
        )
    return estimate


@dataclass
class TokenLedger:
    """Tokens spent per stage of one ticket, with a one-time warning at 90 % of the ticket's budget."""

    budget: int | None = None
    spent: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.spent.values())

    def add(self, stage: str, tokens: int) -> None:
        before = self.total
        self.spent[stage] = self.spent.get(stage, 0) + tokens
        if self.budget and before < WARN_FRACTION * self.budget <= self.total:
            note = f"token budget: {self.total} of {self.budget} used (over 90 %)"
            self.warnings.append(note)
            log.warning(note)

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.total >= self.budget


def shrink_text(text: str, level: int, keep_head: float = 0.5) -> str:
    """Halve `text` per shrink level, keeping its head and tail and saying what was cut."""
    if level <= 0:
        return text
    limit = max(200, len(text) >> level)
    if len(text) <= limit:
        return text
    head = int(limit * keep_head)
    tail = limit - head
    cut = len(text) - limit
    return f"{text[:head]}\n[... {cut} characters cut to fit the context ...]\n{text[-tail:] if tail else ''}"


def tool_results_shrunk(messages: list[dict[str, Any]], level: int) -> list[dict[str, Any]]:
    """For agent conversations: shorten old tool outputs first, the latest ones last."""
    if level <= 0:
        return messages
    shrunk = []
    recent = len(messages) - 4
    for index, message in enumerate(messages):
        if message.get("role") == "tool" and isinstance(message.get("content"), str):
            extra = 1 if index >= recent else 2
            message = {**message, "content": shrink_text(message["content"], level + extra - 1)}
        shrunk.append(message)
    return shrunk

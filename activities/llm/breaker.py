"""A circuit breaker per model endpoint, shared by every activity of this worker process.

closed -> (N consecutive transient failures, or a limit with a known reset) -> open until a time ->
half-open: one cheap health probe (/api/version, /health) decides; success closes, failure re-opens.
When the provider named a reset time the open period ends exactly there. The durable, cross-worker
part for limits is the limit gate workflow (workflows/limit_gate.py); this is the fast local layer.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from activities.llm.base import ErrorKind, ModelClient, ModelError

BreakerState = Literal["closed", "open", "half-open"]
# Failures that say something about the endpoint rather than about our request or one model.
_COUNTED: frozenset[ErrorKind] = frozenset({"unreachable", "timeout", "overloaded", "stream_error"})
_LIMITS: frozenset[ErrorKind] = frozenset({"rate_limited", "usage_limit"})


@dataclass
class Breaker:
    endpoint: str
    failure_threshold: int = 3
    open_seconds: float = 30.0
    state: BreakerState = "closed"
    failures: int = 0
    open_until: float = 0.0  # time.time()
    opened_by: ModelError | None = None
    trips: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def is_closed(self) -> bool:
        return self.state == "closed"

    def record_success(self) -> None:
        self.state, self.failures, self.opened_by = "closed", 0, None

    def record_failure(self, error: ModelError) -> None:
        if error.kind in _LIMITS and (error.reset_at is not None or error.retry_after is not None):
            until = error.reset_at.timestamp() if error.reset_at else time.time() + (error.retry_after or 0)
            self._open(until, error)
            return
        if error.kind not in _COUNTED:
            return
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.failure_threshold:
            # Jitter the open period so endpoints that fell together are not probed in lock-step.
            self._open(time.time() + self.open_seconds * random.uniform(0.5, 1.0), error)

    def _open(self, until: float, error: ModelError) -> None:
        self.state, self.open_until, self.opened_by = "open", until, error
        self.trips += 1

    def blocked_error(self) -> ModelError | None:
        """The error to raise instead of calling, while open and before open_until."""
        if self.state != "open" or time.time() >= self.open_until:
            return None
        cause = self.opened_by
        kind: ErrorKind = cause.kind if cause else "unreachable"
        reset = datetime.fromtimestamp(self.open_until, UTC)
        return ModelError(
            kind,
            f"circuit open until {reset.isoformat(timespec='seconds')} "
            f"after: {cause.message if cause else 'failures'}",
            endpoint=self.endpoint,
            model=cause.model if cause else None,
            reset_at=reset if kind in _LIMITS else None,
            retry_after=max(0.0, self.open_until - time.time()),
        )

    async def admit(self, client: ModelClient) -> None:
        """Let a call through, probing first when the open period has run out; raise while open."""
        blocked = self.blocked_error()
        if blocked is not None:
            raise blocked
        if self.state == "closed":
            return
        async with self.lock:  # one probe at a time: the others wait for its verdict
            if self.is_closed():  # another caller's probe already closed it
                return
            blocked = self.blocked_error()
            if blocked is not None:
                raise blocked
            self.state = "half-open"
            try:
                await client.probe()
            except ModelError as error:
                self.record_failure(error if error.kind in _COUNTED else _as_unreachable(error))
                raise
            if self.opened_by is None or self.opened_by.kind not in _LIMITS:
                self.record_success()
            # After a limit the probe only proves the server is up: the real call is the probe of the
            # limit, so stay half-open until it succeeds (record_success) or fails (re-open).


def _as_unreachable(error: ModelError) -> ModelError:
    return ModelError("unreachable", error.message, endpoint=error.endpoint, model=error.model)


class BreakerBoard:
    """All breakers of this process, keyed by endpoint name."""

    def __init__(self, failure_threshold: int = 3, open_seconds: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._breakers: dict[str, Breaker] = {}

    def get(self, endpoint: str) -> Breaker:
        if endpoint not in self._breakers:
            self._breakers[endpoint] = Breaker(endpoint, self.failure_threshold, self.open_seconds)
        return self._breakers[endpoint]

    def states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in self._breakers.items()}

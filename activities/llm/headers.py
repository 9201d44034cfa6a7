"""Turn a provider's rate-limit headers (or its error prose) into the time the limit resets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from activities.llm.base import LONG_LIMIT_SECONDS

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_ISO_IN_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
_SECONDS_IN_TEXT = re.compile(r"(?:in|after)\s+(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)


def parse_go_duration(text: str) -> float | None:
    """`6m0s` -> 360.0, `12ms` -> 0.012 (OpenAI's x-ratelimit-reset-*); None if it is not one."""
    text = text.strip()
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def parse_timestamp(text: str) -> datetime | None:
    """RFC 3339 (`2026-11-22T05:00:00Z`) or epoch seconds, as an aware UTC datetime."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Retry-After is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def reset_from_headers(headers: Mapping[str, str], now: datetime) -> datetime | None:
    """The latest reset any header announces; None when the server said nothing usable.

    Precedence: retry-after-ms, retry-after (the server's own answer to "when may I retry"), else the
    latest of x-ratelimit-reset-* (Go durations) and anthropic-ratelimit-*-reset (RFC 3339).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return now + timedelta(milliseconds=max(0.0, float(lower["retry-after-ms"])))
        except ValueError:
            pass
    if "retry-after" in lower:
        seconds = parse_retry_after(lower["retry-after"], now)
        if seconds is not None:
            return now + timedelta(seconds=seconds)
    candidates: list[datetime] = []
    for key, value in lower.items():
        if key.startswith("x-ratelimit-reset-"):
            seconds = parse_go_duration(value)
            if seconds is not None and seconds > 0:
                candidates.append(now + timedelta(seconds=seconds))
        elif key.startswith("anthropic-ratelimit-") and key.endswith("-reset"):
            when = parse_timestamp(value)
            if when is not None:
                candidates.append(when)
    return max(candidates) if candidates else None


def reset_from_text(text: str, now: datetime) -> datetime | None:
    """A reset named in an error message: an ISO timestamp, or "in 30 seconds"."""
    match = _ISO_IN_TEXT.search(text)
    if match:
        when = parse_timestamp(match.group(0).replace(" ", "T"))
        if when is not None:
            return when
    seconds = _SECONDS_IN_TEXT.search(text)
    if seconds:
        return now + timedelta(seconds=float(seconds.group(1)))
    return None


_USAGE_WORDS = ("usage limit", "quota", "spend limit", "billing", "hit your limit")


def limit_error_fields(message: str, reset_at: datetime | None, now: datetime) -> tuple[str, float | None]:
    """("usage_limit" | "rate_limited", retry_after seconds) for a 429-like answer.

    A quota/usage message, or any limit that resets further away than a short retry should wait, is a
    usage limit (a durable wait); everything else is a rate limit (a jittered retry).
    """
    retry_after = None if reset_at is None else max(0.0, (reset_at - now).total_seconds())
    lowered = message.lower()
    long_wait = retry_after is not None and retry_after > LONG_LIMIT_SECONDS
    if long_wait or any(word in lowered for word in _USAGE_WORDS):
        return "usage_limit", retry_after
    return "rate_limited", retry_after

"""Reset-time parsing, the circuit breaker's states and the context budget (no server needed)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from activities.llm.base import BEHAVIOUR, Behaviour, ChatRequest, ModelError
from activities.llm.breaker import Breaker
from activities.llm.budget import TokenLedger, ensure_fits, estimate_tokens, shrink_text
from activities.llm.headers import (
    limit_error_fields,
    parse_go_duration,
    parse_retry_after,
    reset_from_headers,
    reset_from_text,
)
from tests.fakes.ollama_server import FakeOllama, serve

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def test_every_kind_has_exactly_one_behaviour() -> None:
    assert len(BEHAVIOUR) == 12 and set(BEHAVIOUR.values()) == set(Behaviour)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("soon", None),
        ("", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == seconds


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after("Sun, 22 Nov 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:00 GMT", NOW) == 0.0  # in the past: now
    assert parse_retry_after("whenever", NOW) is None


def test_reset_headers_in_order_of_precedence() -> None:
    assert reset_from_headers({"retry-after-ms": "1500", "Retry-After": "60"}, NOW) == NOW + timedelta(
        seconds=1.5
    )
    assert reset_from_headers({"Retry-After": "60"}, NOW) == NOW + timedelta(seconds=60)
    openai = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    assert reset_from_headers(openai, NOW) == NOW + timedelta(minutes=6)  # the latest bucket decides
    anthropic = {
        "anthropic-ratelimit-tokens-reset": "2026-11-22T12:41:00Z",
        "anthropic-ratelimit-requests-reset": "2026-11-22T12:01:00Z",
    }
    assert reset_from_headers(anthropic, NOW) == datetime(2026, 11, 22, 12, 41, tzinfo=UTC)
    assert reset_from_headers({"x-ratelimit-reset-tokens": "-1"}, NOW) is None  # Azure's "unknown"


def test_reset_named_in_a_message() -> None:
    text = "you have reached your usage limit; it resets at 2026-11-22T17:00:00Z"
    assert reset_from_text(text, NOW) == datetime(2026, 11, 22, 17, tzinfo=UTC)
    assert reset_from_text("try again in 20 seconds", NOW) == NOW + timedelta(seconds=20)
    assert reset_from_text("no idea", NOW) is None


def test_a_long_rate_limit_is_a_usage_limit() -> None:
    assert limit_error_fields("Rate limit reached for requests", NOW + timedelta(seconds=5), NOW) == (
        "rate_limited",
        5.0,
    )
    assert limit_error_fields("slow down", NOW + timedelta(hours=2), NOW)[0] == "usage_limit"
    assert limit_error_fields("You exceeded your current quota", None, NOW) == ("usage_limit", None)


def _down(kind: str = "unreachable") -> ModelError:
    return ModelError(kind, "connection refused", endpoint="local")  # type: ignore[arg-type]


async def test_breaker_opens_after_failures_and_probes_when_the_period_ends() -> None:
    with serve(FakeOllama()) as fake:
        from activities.llm.ollama import OllamaClient

        client = OllamaClient("local", fake.url, num_ctx=4096)
        breaker = Breaker("local", failure_threshold=2, open_seconds=0.2)
        breaker.record_failure(_down())
        assert breaker.is_closed()
        breaker.record_failure(_down())
        assert not breaker.is_closed()
        with pytest.raises(ModelError) as blocked:
            await breaker.admit(client)
        assert blocked.value.kind == "unreachable" and "circuit open" in blocked.value.message
        breaker.open_until = time.time()  # the open period is over
        await breaker.admit(client)  # half-open: the /api/version probe succeeds and closes it
        assert breaker.state == "closed"
        assert [r.path for r in fake.requests] == ["/api/version"]
        await client.aclose()


def test_breaker_stays_open_exactly_until_a_known_reset() -> None:
    breaker = Breaker("hosted")
    reset = datetime.now(UTC) + timedelta(minutes=5)
    breaker.record_failure(ModelError("usage_limit", "quota", endpoint="hosted", reset_at=reset))
    assert breaker.state == "open" and breaker.open_until == reset.timestamp()
    blocked = breaker.blocked_error()
    assert blocked is not None and blocked.kind == "usage_limit" and blocked.reset_at == reset


def test_model_and_request_errors_do_not_trip_the_breaker() -> None:
    breaker = Breaker("local", failure_threshold=1)
    for kind in ("model_missing", "bad_request", "invalid_output", "context_exceeded"):
        breaker.record_failure(_down(kind))
    assert breaker.state == "closed"


def test_token_estimate_is_conservative_and_oversized_prompts_are_refused() -> None:
    text = "def add(a, b):\n    return a + b\n" * 100  # ~3,100 chars; real tokenizers give ~900 tokens
    request = ChatRequest(model="m", messages=[{"role": "user", "content": text}], max_output_tokens=512)
    assert estimate_tokens(request) >= len(text) / 3.5
    assert ensure_fits(request, 8192, "local") > 0
    with pytest.raises(ModelError) as refused:
        ensure_fits(request, 1024, "local")
    assert refused.value.kind == "context_exceeded" and "not sent" in refused.value.message


def test_ledger_warns_once_at_ninety_percent() -> None:
    ledger = TokenLedger(budget=1000)
    ledger.add("classify", 500)
    ledger.add("code", 350)
    assert ledger.warnings == []
    ledger.add("code", 60)
    ledger.add("review", 10)
    assert ledger.warnings == ["token budget: 910 of 1000 used (over 90 %)"]
    assert ledger.spent == {"classify": 500, "code": 410, "review": 10} and not ledger.exhausted
    ledger.add("review", 90)
    assert ledger.exhausted


def test_shrinking_keeps_head_and_tail() -> None:
    text = "HEAD " + "x" * 5000 + " TAIL"
    once, twice = shrink_text(text, 1), shrink_text(text, 2)
    assert once.startswith("HEAD") and once.endswith("TAIL") and len(twice) < len(once) < len(text)
    assert shrink_text(text, 0) == text

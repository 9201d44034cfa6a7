"""Every limit message format we know (docs/agents.md) parses to its kind and reset time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from activities.agents.limits import is_retry_notice, parse_limit, reset_from_epoch

NOW = datetime(2026, 8, 8, 10, 0, tzinfo=UTC)  # 12:00 in Berlin, 03:00 in Los Angeles
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: str, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


USAGE_CASES = [
    # Claude Code
    ("Claude AI usage limit reached|1750708800", datetime.fromtimestamp(1750708800, tz=UTC)),
    (
        "Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).",
        at("America/Bogota", 2026, 8, 8, 15, 0),
    ),
    (
        "5-hour limit reached ∙ resets 12pm",
        at("Europe/Berlin", 2026, 8, 8, 12, 1),
    ),  # 12pm Berlin is now: the reset is within this minute, not tomorrow
    ("You've hit your limit · resets 8pm (Europe/Berlin)", at("Europe/Berlin", 2026, 8, 8, 20, 0)),
    (
        "You've hit your limit · resets 9am (Europe/Berlin)",
        at("Europe/Berlin", 2026, 8, 9, 9, 0),
    ),  # past: tomorrow
    (
        "You've hit your limit · resets Apr 23 at 4pm (America/Recife)",
        at("America/Recife", 2027, 4, 23, 16, 0),  # April is behind us: next year's
    ),
    (
        "You've hit your limit · resets Aug 12 at 4pm (America/Recife)",
        at("America/Recife", 2026, 8, 12, 16, 0),
    ),
    (
        "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
        at("America/Los_Angeles", 2026, 8, 9, 0, 50),
    ),
    ("You've hit your weekly limit · resets Aug 11, 5pm (Asia/Tokyo)", at("Asia/Tokyo", 2026, 8, 11, 17, 0)),
    # Codex (local time of the machine running it; here Berlin)
    ("You've hit your usage limit. Try again at 3:28 PM.", at("Europe/Berlin", 2026, 8, 8, 15, 28)),
    ("You've hit your usage limit. Try again at 11:05 AM.", at("Europe/Berlin", 2026, 8, 9, 11, 5)),
    (
        "You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
        "https://chatgpt.com/codex/settings/usage to purchase more credits or try again at "
        "Aug 8th, 2026 12:30 PM.",
        at("Europe/Berlin", 2026, 8, 8, 12, 30),
    ),
    (
        "You've hit your usage limit. To get more access now, send a request to your admin or try again at "
        "Sep 1st, 2026 9:00 AM.",
        at("Europe/Berlin", 2026, 9, 1, 9, 0),
    ),
    ("You've hit your usage limit. Try again later.", None),
    ("Quota exceeded. Check your plan and billing details.", None),
    # Gemini CLI
    (
        "TerminalQuotaError: You have exhausted your capacity on this model. "
        "Your quota will reset after 3h20m.",
        None,  # replaced below: no parsable delay -> next midnight Pacific
    ),
    (
        "RetryableQuotaError: Quota exceeded for gemini-2.5-pro. Please retry in 3600s.",
        NOW + timedelta(hours=1),
    ),
    (
        "429 MODEL_CAPACITY_EXHAUSTED: capacity exceeded for gemini-2.5-pro",
        at("America/Los_Angeles", 2026, 8, 9, 0, 0),
    ),
    # Anthropic API: the monthly spend cap resets on the 1st, 00:00 UTC
    (
        '429 {"type":"error","error":{"type":"rate_limit_error","details":{"error_code":'
        '"enforced_spend_limit_reached"}}}',
        datetime(2026, 9, 1, tzinfo=UTC),
    ),
]
USAGE_CASES[-4] = (USAGE_CASES[-4][0], at("America/Los_Angeles", 2026, 8, 9, 0, 0))


@pytest.mark.parametrize(("message", "reset"), USAGE_CASES, ids=[c[0][:48] for c in USAGE_CASES])
def test_usage_limits_parse_to_their_reset(message: str, reset: datetime | None) -> None:
    limit = parse_limit(message, NOW, BERLIN)
    assert limit is not None and limit.kind == "usage", limit
    assert limit.reset_at == reset


RATE_CASES = [
    ("Please retry in 34.07s.", 34.07),
    ("RetryableQuotaError: Resource exhausted. Suggested retry after 60s.", 60.0),
    (
        "litellm.RateLimitError: The API provider has rate limited you. "
        "Try again later or check your quotas.",
        None,
    ),
    ("API Error: Server is temporarily limiting requests (not your usage limit)", None),
    ('API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', None),
    ('429 {"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens"}}', None),
    ("HTTP 429 Too Many Requests, retry-after: 12", 12.0),
    ("We're currently experiencing high demand, which may cause temporary errors.", None),
]


@pytest.mark.parametrize(("message", "retry"), RATE_CASES, ids=[c[0][:48] for c in RATE_CASES])
def test_rate_limits_parse_to_their_delay(message: str, retry: float | None) -> None:
    limit = parse_limit(message, NOW, BERLIN)
    assert limit is not None and limit.kind == "rate", limit
    assert limit.retry_after == pytest.approx(retry) if retry is not None else limit.retry_after is None


def test_ordinary_output_is_no_limit() -> None:
    for text in (
        "Edited calc.py",
        "All 4 tests passed",
        "I will retry the test command",
        "limits.py updated",
    ):
        assert parse_limit(text, NOW, BERLIN) is None


def test_a_long_retry_is_a_usage_limit() -> None:
    limit = parse_limit("Please retry in 7200s.", NOW, BERLIN)
    assert limit is not None and limit.kind == "usage" and limit.reset_at == NOW + timedelta(hours=2)


def test_epoch_resets_in_seconds_or_milliseconds() -> None:
    assert reset_from_epoch(1755772800) == datetime(2025, 8, 21, 10, 40, tzinfo=UTC)
    assert reset_from_epoch("1755772800000") == datetime(2025, 8, 21, 10, 40, tzinfo=UTC)
    assert reset_from_epoch(None) is None


def test_unknown_zone_falls_back_to_local() -> None:
    limit = parse_limit("You've hit your limit · resets 8pm (Mars/Olympus)", NOW, BERLIN)
    assert limit is not None and limit.reset_at == at("Europe/Berlin", 2026, 8, 8, 20, 0)


# Found with the real CLIs (issue #14): Codex 0.171 prints a typographic apostrophe; newer Codex texts;
# Gemini 0.61's daily quota; Anthropic's "credit balance"; OpenAI's insufficient_quota as aider shows it.
REAL_USAGE_CASES = [
    ("You\u2019ve hit your usage limit. Try again at 3:32 PM.", at("Europe/Berlin", 2026, 8, 8, 15, 32)),
    (
        "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
        "https://chatgpt.com/settings/usage to purchase more credits or try again at 7:48 PM.",
        at("Europe/Berlin", 2026, 8, 8, 19, 48),
    ),
    ("You hit your spend cap set in your workspace. Increase your spend cap to continue.", None),
    ("Your workspace is out of credits. Add credits to continue.", None),
    ("You\u2019ve reached your usage limit. Increase your limits to continue", None),
    ("Credit balance is too low", None),
    (
        "litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your \n"
        "current quota, please check your plan and billing details.",
        None,
    ),
    (
        "Gemini API error: You have exhausted your daily quota on this model. Please wait and try again.",
        at("America/Los_Angeles", 2026, 8, 9, 0, 0),
    ),
]


@pytest.mark.parametrize(("message", "reset"), REAL_USAGE_CASES, ids=[c[0][:48] for c in REAL_USAGE_CASES])
def test_real_cli_usage_limits(message: str, reset: datetime | None) -> None:
    limit = parse_limit(message, NOW, BERLIN)
    assert limit is not None and limit.kind == "usage", limit
    assert limit.reset_at == reset


def test_a_delay_wrapped_onto_the_next_line_is_read() -> None:
    """aider wraps at ~80 columns: "...Please try again in\\n20s." is still 20 s."""
    limit = parse_limit(
        "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for requests per min "
        "(RPM): Limit 3, Used 3, Requested 1. Please try again in\n20s.",
        NOW,
        BERLIN,
    )
    assert limit is not None and limit.kind == "rate" and limit.retry_after == 20.0


def test_googles_per_minute_quota_with_a_short_delay_is_a_rate_limit() -> None:
    limit = parse_limit("You exceeded your current quota ... Please retry in 34.07s.", NOW, BERLIN)
    assert limit is not None and limit.kind == "rate" and limit.retry_after == pytest.approx(34.07)


def test_a_reset_clock_of_the_current_minute_is_within_the_minute_not_tomorrow() -> None:
    now = datetime(2026, 8, 8, 13, 28, 40, tzinfo=UTC)  # 15:28:40 in Berlin
    limit = parse_limit("You\u2019ve hit your usage limit. Try again at 3:28 PM.", now, BERLIN)
    assert limit is not None and limit.reset_at == at("Europe/Berlin", 2026, 8, 8, 15, 29)


@pytest.mark.parametrize(
    "notice",
    [
        "Reconnecting... 1/5 (exceeded retry limit, last status: 429 Too Many Requests, request id: req_1)",
        "litellm.RateLimitError: ... Please try again in 20s. Retrying in 0.2 seconds...",
        "Attempt 1 failed: You exceeded your current quota, please check your plan and billing details.",
    ],
)
def test_a_clis_own_retry_notice_is_recognised(notice: str) -> None:
    assert is_retry_notice(notice)
    assert not is_retry_notice("exceeded retry limit, last status: 429 Too Many Requests, request id: req_1")

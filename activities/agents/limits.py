"""Rate and usage limits in agent output: which kind, and when it resets.

Pure functions of (text, now, local zone), so every message format we have seen has a fixture test
(tests/agents/test_limits.py). The formats come from the agents' sources and issue reports, collected in
docs/agents.md; vendors change them often, so each one is a separate, small pattern.

usage  = a plan's quota (hours to days): the ticket waits durably until reset_at, then resumes the session.
         No credits / a spend cap are usage limits with an unknown reset: the ticket waits and probes.
rate   = a short throttle (seconds to minutes): retried after retry_after seconds.

Text is normalised first: typographic quotes become ASCII ones (Codex prints "You\u2019ve" with
U+2019) and all whitespace, line breaks included, becomes one space (aider wraps its messages at ~80 columns).
A CLI's own retry notice ("Reconnecting... 1/5 (...429...)", "Retrying in 2.0 seconds...") is not a
final outcome: `is_retry_notice` tells the adapters to keep it only in case the run then fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LimitKind = Literal["usage", "rate"]
# Google's daily quotas roll over at midnight Pacific time.
GOOGLE_QUOTA_ZONE = "America/Los_Angeles"
# Reset clocks are printed to the minute; the reset is within the minute printed.
CLOCK_RESOLUTION = timedelta(minutes=1)
# A "rate limit" asking for a longer wait than this is really a quota (Gemini's own rule).
RATE_TO_USAGE_SECONDS = 300


@dataclass(frozen=True)
class Limit:
    kind: LimitKind
    message: str
    reset_at: datetime | None = None
    retry_after: float | None = None


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_CLOCK = r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)"
_ZONE = r"(?:\s*\((?P<zone>[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*)\))?"
_DATE = r"(?P<month>[A-Za-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?(?:\s+(?P<year>\d{4}))?"

# Claude Code, 2025 CLIs: "Claude AI usage limit reached|1750708800".
_CLAUDE_EPOCH = re.compile(r"usage limit reached\s*\|\s*(?P<epoch>\d{9,11})", re.I)
# Claude Code: "... limit will reset at 3pm (America/Bogota)", "... resets 8pm (Europe/Berlin)",
# "... resets Apr 23 at 4pm (America/Recife)", "5-hour limit reached ∙ resets 12pm".
_CLAUDE_CLOCK = re.compile(
    rf"(?:resets?(?:\s+at)?|reset at)\s+(?:{_DATE}\s*(?:at\s+|,\s*)?)?{_CLOCK}{_ZONE}", re.I
)
_CLAUDE_USAGE = re.compile(
    r"usage limit reached|you've hit your (?:\w+ )?limit|you have hit your (?:\w+ )?limit|"
    r"(?:5-hour|five.hour|weekly|session|opus|sonnet) limit reached",
    re.I,
)
# Codex 0.17x (typographic apostrophe, normalised): "You\u2019ve hit your usage limit. ... try again at
# 3:32 PM." / "... at Aug 8th, 2026 12:30 PM."; "You\u2019ve hit your usage limit for <model>...";
# "You've reached your usage limit. Increase your limits to continue"; workspace spend caps and credits.
_CODEX_USAGE = re.compile(
    r"you've hit your usage limit|you've reached your (?:usage|workspace credit) limit|"
    r"you hit your spend cap|(?:workspace is|you're) out of credits",
    re.I,
)
_CODEX_AT = re.compile(rf"try again at\s+(?:{_DATE}\s+)?{_CLOCK}", re.I)
_QUOTA = re.compile(
    r"quota exceeded|insufficient_quota|exceeded your current quota|exhausted your capacity|"
    r"capacity exceeded|MODEL_CAPACITY_EXHAUSTED|QUOTA_EXHAUSTED|TerminalQuotaError|spend limit|"
    r"enforced_spend_limit_reached|exhausted your daily quota|daily quota|PerDay|"
    r"credit balance is too low|out of credits|insufficient credits|spend cap",
    re.I,
)
# Gemini: "Please retry in 34.07s.", "Suggested retry after 60s."; HTTP: "Retry-After: 30".
_RETRY_IN = re.compile(
    r"(?:retry in|retry after|try again in|retry-after:?)\s*(?P<n>\d+(?:\.\d+)?)\s*"
    r"(?P<unit>ms|milliseconds?|s|sec(?:ond)?s?|m|min(?:ute)?s?|h|hours?)?\b",
    re.I,
)
_TERMINAL = re.compile(r"TerminalQuotaError|daily quota|PerDay|per day", re.I)
# Anthropic's monthly spend cap resets at 00:00 UTC on the 1st.
_MONTHLY = re.compile(r"enforced_spend_limit_reached|monthly spend limit", re.I)
_RATE = re.compile(
    r"experiencing high demand|rate.?limit|too many requests|\b429\b|RetryableQuotaError|rate limited you|"
    r"temporarily limiting requests|\b529\b|overloaded",
    re.I,
)
# A CLI retrying on its own: Codex "Reconnecting... 2/5 (...)", aider "Retrying in 2.0 seconds...",
# Gemini "Attempt 1 failed: ... Retrying after 5889ms...".
_RETRY_NOTICE = re.compile(
    r"^reconnecting\.*\s*\d+/\d+|\bretrying in \d+(?:\.\d+)? ?s|^attempt \d+ failed\b",
    re.I,
)
_QUOTES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"'}
)


def local_zone() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


def parse_limit(text: str, now: datetime, local: tzinfo | None = None) -> Limit | None:
    """The limit a message reports, or None. `now` must be aware; `local` is the agent machine's zone."""
    local = local or local_zone()
    text = normalise(text)
    message = text[:500]
    if found := _CLAUDE_EPOCH.search(text):
        return Limit("usage", message, reset_at=datetime.fromtimestamp(int(found["epoch"]), tz=UTC))
    if _CLAUDE_USAGE.search(text) and not _CODEX_USAGE.search(text):
        found = _CLAUDE_CLOCK.search(text)
        return Limit("usage", message, reset_at=_clock_reset(found, now, local) if found else None)
    if _CODEX_USAGE.search(text):
        found = _CODEX_AT.search(text)
        return Limit("usage", message, reset_at=_clock_reset(found, now, local) if found else None)
    retry = _retry_seconds(text)
    if _QUOTA.search(text) or (retry is not None and retry > RATE_TO_USAGE_SECONDS):
        if retry is not None and retry <= RATE_TO_USAGE_SECONDS and not _TERMINAL.search(text):
            # Google's per-minute 429 also says "You exceeded your current quota": a short wait is a rate.
            return Limit("rate", message, retry_after=retry)
        if retry is not None:
            return Limit("usage", message, reset_at=now + timedelta(seconds=retry))
        if _MONTHLY.search(text):
            return Limit("usage", message, reset_at=_next_month(now))
        return Limit("usage", message, reset_at=_google_midnight(now) if _is_google(text) else None)
    if _RATE.search(text) or (retry is not None and re.search(r"retry|try again", text, re.I)):
        return Limit("rate", message, retry_after=retry)
    return None


def normalise(text: str) -> str:
    """ASCII quotes and single spaces: vendors print "You\u2019ve" and wrap long messages."""
    return " ".join(text.translate(_QUOTES).split())


def is_retry_notice(text: str) -> bool:
    """The CLI says it will retry by itself: not an outcome unless the run then fails."""
    return bool(_RETRY_NOTICE.search(normalise(text)))


def reset_from_epoch(value: float | int | str | None) -> datetime | None:
    """Structured resets (Claude's rate_limit_event.resetsAt, Codex's resets_at) are epoch seconds."""
    if value is None or value == "":
        return None
    seconds = float(value)
    return datetime.fromtimestamp(seconds / 1000 if seconds > 1e12 else seconds, tz=UTC)


def _retry_seconds(text: str) -> float | None:
    found = _RETRY_IN.search(text)
    if not found:
        return None
    unit = (found["unit"] or "s").lower()
    scale = 0.001 if unit.startswith("ms") or unit.startswith("milli") else 1.0
    if unit.startswith("m") and not unit.startswith("ms") and not unit.startswith("milli"):
        scale = 60.0
    if unit.startswith("h"):
        scale = 3600.0
    return float(found["n"]) * scale


def _zone(name: str | None, fallback: tzinfo) -> tzinfo:
    if not name:
        return fallback
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return fallback


def _clock_reset(found: re.Match[str], now: datetime, local: tzinfo) -> datetime:
    """A wall-clock reset in its zone; without a date it is the next such time (tomorrow if already past)."""
    zone = _zone(found.groupdict().get("zone"), local)
    hour = int(found["hour"]) % 12 + (12 if found["ampm"].lower().startswith("p") else 0)
    clock = time(hour, int(found["minute"] or 0))
    here = now.astimezone(zone)
    if found["month"] and found["month"][:3].lower() in _MONTHS:
        year = int(found["year"]) if found["year"] else here.year
        day = date(year, _MONTHS[found["month"][:3].lower()], int(found["day"]))
        candidate = datetime.combine(day, clock, tzinfo=zone)
        if not found["year"] and candidate < here - timedelta(days=1):
            candidate = candidate.replace(year=year + 1)  # "Jan 2" seen on Dec 30
        return candidate.astimezone(UTC)
    candidate = datetime.combine(here.date(), clock, tzinfo=zone)
    if timedelta(0) <= here - candidate < CLOCK_RESOLUTION:
        # The clock is printed to the minute: "3:28 PM" read at 3:28:40 is a reset within the minute.
        return (candidate + CLOCK_RESOLUTION).astimezone(UTC)
    if candidate <= here:
        candidate = datetime.combine(here.date() + timedelta(days=1), clock, tzinfo=zone)
    return candidate.astimezone(UTC)


def _is_google(text: str) -> bool:
    return bool(
        re.search(r"gemini|google|QUOTA_EXHAUSTED|TerminalQuotaError|exhausted your capacity", text, re.I)
    )


def _google_midnight(now: datetime) -> datetime:
    zone = ZoneInfo(GOOGLE_QUOTA_ZONE)
    here = now.astimezone(zone)
    return datetime.combine(here.date() + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def _next_month(now: datetime) -> datetime:
    here = now.astimezone(UTC)
    year, month = (here.year + 1, 1) if here.month == 12 else (here.year, here.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)

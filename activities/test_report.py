"""Reading pass/fail/skip counts out of test runner output (pytest, unittest, jest, go test, cargo).

Counts are informational: whether checks passed is decided by the exit code alone, so a summary
format we do not recognise only costs the counts, never a wrong verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PYTEST_WORDS = "passed|failed|skipped|errors?|xfailed|xpassed|warnings?|deselected|rerun"
_PYTEST_LINE = re.compile(
    rf"^=*\s*((?:\d+ (?:{_PYTEST_WORDS})(?:, )?)+)(?: in [\d.]+s(?: \([^)]*\))?)?\s*=*$"
)
_ITEM = re.compile(r"(\d+) ([a-z]+)")
_JEST_LINE = re.compile(r"^Tests:\s+(.*\d+ total)\s*$")
_CARGO_LINE = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ")
_UNITTEST_RESULT = re.compile(r"^(OK|FAILED)(?: \((.*)\))?\s*$")
_KEY_VALUE = re.compile(r"([a-z ]+)=(\d+)")
_GO_PACKAGE = re.compile(r"^(ok|FAIL|\?)\s+\S+\s")


@dataclass(frozen=True)
class Counts:
    passed: int | None = None
    failed: int | None = None
    skipped: int | None = None


def _items(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for number, word in _ITEM.findall(text):
        found[word] = found.get(word, 0) + int(number)
    return found


def parse_pytest(lines: list[str]) -> Counts | None:
    for line in reversed(lines):
        match = _PYTEST_LINE.match(line.strip())
        if match:
            n = _items(match.group(1))
            failed = n.get("failed", 0) + n.get("error", 0) + n.get("errors", 0)
            return Counts(n.get("passed", 0), failed, n.get("skipped", 0) + n.get("xfailed", 0))
    return None


def parse_jest(lines: list[str]) -> Counts | None:
    for line in reversed(lines):
        match = _JEST_LINE.match(line.strip())
        if match:
            n = _items(match.group(1))
            return Counts(n.get("passed", 0), n.get("failed", 0), n.get("skipped", 0) + n.get("todo", 0))
    return None


def parse_cargo(lines: list[str]) -> Counts | None:
    # One "test result" line per test binary (unit, integration, doc tests): add them up.
    results = [m.groups() for m in (_CARGO_LINE.match(line.strip()) for line in lines) if m]
    if not results:
        return None
    return Counts(*(sum(int(r[i]) for r in results) for i in range(3)))


def parse_unittest(lines: list[str]) -> Counts | None:
    stripped = [line.strip() for line in lines]
    ran = [int(m.group(1)) for m in map(_UNITTEST_RAN.match, stripped) if m]
    verdicts = [m for m in map(_UNITTEST_RESULT.match, stripped) if m]
    if not ran or not verdicts:
        return None
    detail = {key.strip(): int(value) for key, value in _KEY_VALUE.findall(verdicts[-1].group(2) or "")}
    failed = detail.get("failures", 0) + detail.get("errors", 0) + detail.get("unexpected successes", 0)
    skipped = detail.get("skipped", 0) + detail.get("expected failures", 0)
    return Counts(max(ran[-1] - failed - skipped, 0), failed, skipped)


def parse_go(lines: list[str]) -> Counts | None:
    """go test prints one ok/FAIL/? line per package: these counts are packages, not tests."""
    kinds = [m.group(1) for m in (_GO_PACKAGE.match(line) for line in lines) if m]
    if not kinds:
        return None
    return Counts(kinds.count("ok"), kinds.count("FAIL"), kinds.count("?"))


_PARSERS: list[Callable[[list[str]], Counts | None]] = [
    parse_pytest,
    parse_jest,
    parse_cargo,
    parse_unittest,
    parse_go,
]


def parse_counts(output: str | list[str]) -> Counts:
    """Counts from the first parser that recognises the output, or all-None when none does."""
    text = output if isinstance(output, str) else "\n".join(output)
    lines = _ANSI.sub("", text).splitlines()
    for parser in _PARSERS:
        counts = parser(lines)
        if counts is not None:
            return counts
    return Counts()

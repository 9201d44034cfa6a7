"""What a test run reports about itself: pass/fail/skip counts, the first failing test, "no tests".

Counts come from the runner's own report: pytest's JUnit XML when there is one (parse_junit), else the
runner's summary line (pytest, unittest, jest, vitest, mocha, node --test, go test, cargo). The verdict
(activities/checks.py) needs at least one test that ran, so a summary we cannot read never passes as a
green run: it is reported as passed with unknown counts only when the exit code is 0 and the output
shows no sign of an empty run.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
_GO_TEST = re.compile(r"^--- (PASS|FAIL|SKIP): (\S+)")
_TAP_COUNT = re.compile(r"^# (tests|pass|fail|skipped|todo|cancelled) (\d+)$")
_MOCHA_COUNT = re.compile(r"^(\d+) (passing|failing|pending)\b")
_VITEST_LINE = re.compile(r"^Tests\s+(.*\(\d+\))\s*$")
MAX_JUNIT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Counts:
    passed: int | None = None
    failed: int | None = None
    skipped: int | None = None

    @property
    def known(self) -> bool:
        return self.passed is not None or self.failed is not None

    @property
    def ran(self) -> int | None:
        """Tests that ran (passed + failed); None when the counts are unknown."""
        if not self.known:
            return None
        return (self.passed or 0) + (self.failed or 0)


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
    """Tests from `--- PASS/FAIL/SKIP` lines (go test -v, or failures), else packages (ok/FAIL/?)."""
    tests = [m.group(1) for m in (_GO_TEST.match(line) for line in lines) if m]
    kinds = [m.group(1) for m in (_GO_PACKAGE.match(line) for line in lines) if m]
    if tests and "PASS" in tests:
        return Counts(tests.count("PASS"), tests.count("FAIL"), tests.count("SKIP"))
    if not kinds:
        return None
    return Counts(kinds.count("ok"), kinds.count("FAIL"), kinds.count("?"))


def parse_tap(lines: list[str]) -> Counts | None:
    """node --test (TAP reporter, the default when not on a terminal): `# pass N`, `# fail N`, ..."""
    found = {m.group(1): int(m.group(2)) for m in (_TAP_COUNT.match(line.strip()) for line in lines) if m}
    if "tests" not in found or "pass" not in found:
        return None
    skipped = found.get("skipped", 0) + found.get("todo", 0)
    return Counts(found["pass"], found.get("fail", 0) + found.get("cancelled", 0), skipped)


def parse_mocha(lines: list[str]) -> Counts | None:
    found = {m.group(2): int(m.group(1)) for m in (_MOCHA_COUNT.match(line.strip()) for line in lines) if m}
    if "passing" not in found:
        return None
    return Counts(found["passing"], found.get("failing", 0), found.get("pending", 0))


def parse_vitest(lines: list[str]) -> Counts | None:
    for line in reversed(lines):
        match = _VITEST_LINE.match(line.strip())
        if match:
            n = _items(match.group(1))
            return Counts(n.get("passed", 0), n.get("failed", 0), n.get("skipped", 0) + n.get("todo", 0))
    return None


_PARSERS: list[Callable[[list[str]], Counts | None]] = [
    parse_pytest,
    parse_jest,
    parse_cargo,
    parse_unittest,
    parse_tap,
    parse_mocha,
    parse_vitest,
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


# ------------------------------------------------------------------------------ JUnit XML (pytest)


@dataclass(frozen=True)
class JUnitReport:
    counts: Counts
    first_failure: str | None


def parse_junit(path: Path) -> JUnitReport | None:
    """Counts and the first failing test from a JUnit XML file (pytest --junitxml); None if unreadable."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_JUNIT_BYTES:
            return None
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        return None
    passed = failed = skipped = 0
    first: str | None = None
    for suite in suites:
        for case in suite.iter("testcase"):
            tags = {child.tag for child in case}
            if tags & {"failure", "error"}:
                failed += 1
                first = first or _case_name(case)
            elif "skipped" in tags:
                skipped += 1
            else:
                passed += 1
    return JUnitReport(Counts(passed, failed, skipped), first)


def _case_name(case: ET.Element) -> str:
    """pytest's node id when it can be rebuilt (tests/test_a.py::TestX::test_y), else classname.name."""
    classname, name = case.get("classname", ""), case.get("name", "?")
    file = case.get("file")
    if file and classname:
        module = file.removesuffix(".py").replace("/", ".")
        rest = classname.removeprefix(module).strip(".")
        return "::".join(part for part in (file, *rest.split("."), name) if part)
    return f"{classname}.{name}" if classname else name


# ------------------------------------------------------------------------- first failure, no tests

_FIRST_FAILURE = [
    re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)"),  # pytest's short summary
    re.compile(r"^(?:FAIL|ERROR): (\S+) \(([\w.]+)\)"),  # unittest
    re.compile(r"^--- FAIL: (\S+)"),  # go test
    re.compile(r"^test (\S+) \.\.\. FAILED$"),  # cargo test
    re.compile(r"^not ok \d+ - (.+)$"),  # node --test (TAP)
    re.compile(r"^\u25cf (.+? \u203a .+)$"),  # jest: a bullet, then "suite > test"
    re.compile(r"^(?:FAIL|\u00d7|\u2717) (\S+\.(?:test|spec)\.\w+ > .+)$"),  # vitest
    re.compile(r"^1\) (.+)$"),  # mocha: the first numbered failure
]


def first_failure(output: str | list[str]) -> str | None:
    """The first failing test the output names, in the runner's own words."""
    for line in _lines(output):
        stripped = line.strip()
        for pattern in _FIRST_FAILURE:
            match = pattern.match(stripped)
            if match:
                if match.lastindex == 2:  # unittest: "FAIL: test_x (module.Class.test_x)"
                    qualified = match.group(2)
                    return (
                        qualified if qualified.endswith(match.group(1)) else f"{qualified}.{match.group(1)}"
                    )
                return match.group(1).strip()
    return None


_NO_TESTS = [
    (re.compile(r"^collected 0 items"), "pytest collected no tests"),
    (re.compile(r"no tests ran in [\d.]+s"), "pytest ran no tests"),
    (re.compile(r"^Ran 0 tests in "), "unittest ran 0 tests"),
    (re.compile(r"^NO TESTS RAN$"), "unittest ran no tests"),
    (re.compile(r"^No tests found"), "jest found no tests"),
    (re.compile(r"^No test files found"), "vitest found no test files"),
    (re.compile(r"^# tests 0$"), "node --test ran 0 tests"),
    (re.compile(r"^0 passing\b"), "mocha ran 0 tests"),
    (re.compile(r"^testing: warning: no tests to run"), "go test found no tests to run"),
]


def no_tests_reason(output: str | list[str]) -> str | None:
    """Why the output shows that no test ran, if it says so in a way we know."""
    for line in _lines(output):
        stripped = line.strip()
        for pattern, reason in _NO_TESTS:
            if pattern.search(stripped):
                return reason
    return None


def _lines(output: str | list[str]) -> list[str]:
    text = output if isinstance(output, str) else "\n".join(output)
    return _ANSI.sub("", text).splitlines()

from __future__ import annotations

from pathlib import Path

import pytest

from activities.test_report import Counts, first_failure, no_tests_reason, parse_counts, parse_junit

PYTEST_MIXED = """\
test_s.py .F.FF.s                                                          [100%]
=========================== short test summary info ============================
FAILED test_s.py::test_b - assert 0
FAILED test_s.py::T::test_x - AssertionError: False is not true
3 failed, 2 passed, 2 skipped in 0.72s
"""
PYTEST_VERBOSE = """\
============================= test session starts ==============================
collected 3 items

tests/test_calc.py ..s                                                   [100%]

==================== 3 passed, 1 failed, 2 skipped in 0.12s ====================
"""
PYTEST_ERRORS = "ERROR tests/test_x.py\n1 failed, 2 passed, 1 error, 1 xfailed, 3 warnings in 1.50s\n"
PYTEST_NO_TIME = "FAILED tests/test_a.py::test_a\n1 failed, 2 passed\n"
UNITTEST_FAILED = """\
test_ok (test_s.T.test_ok) ... ok
test_x (test_s.T.test_x) ... FAIL

----------------------------------------------------------------------
Ran 4 tests in 0.001s

FAILED (failures=1, errors=1, skipped=1)
"""
UNITTEST_OK = "..\n" + "-" * 70 + "\nRan 5 tests in 0.002s\n\nOK\n"
UNITTEST_OK_SKIPPED = "Ran 5 tests in 0.002s\n\nOK (skipped=2)\n"
JEST = """\
 PASS  src/sum.test.js
 FAIL  src/sub.test.js
  \u25cf sub \u203a subtracts

Test Suites: 1 failed, 1 passed, 2 total
Tests:       1 failed, 3 passed, 4 total
Snapshots:   0 total
Time:        0.512 s
Ran all test suites.
"""
GO = """\
=== RUN   TestAdd
--- PASS: TestAdd (0.00s)
PASS
ok  \texample.com/calc\t0.002s
--- FAIL: TestSub (0.00s)
    sub_test.go:8: got 1 want 2
FAIL
FAIL\texample.com/calc/sub\t0.003s
?   \texample.com/calc/cmd\t[no test files]
FAIL
"""
GO_PACKAGES = (
    "ok  \texample.com/calc\t0.002s\n"
    "FAIL\texample.com/calc/sub\t0.003s\n"
    "?   \texample.com/c/cmd\t[no test files]\n"
)
CARGO = """\
     Running unittests src/lib.rs (target/debug/deps/cr-f73a538893013b88)

running 3 tests
test tests::a ... ok
test tests::c ... ignored
test tests::b ... ok

test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests cr

running 1 test
test src/lib.rs - add (line 1) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
"""
CARGO_FAILED = (
    "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.13s\n"
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (PYTEST_MIXED, Counts(2, 3, 2)),
        (PYTEST_VERBOSE, Counts(3, 1, 2)),
        (PYTEST_ERRORS, Counts(2, 2, 1)),
        (PYTEST_NO_TIME, Counts(2, 1, 0)),
        ("\x1b[32m\x1b[1m5 passed\x1b[0m\x1b[32m in 0.03s\x1b[0m\n", Counts(5, 0, 0)),
        (UNITTEST_FAILED, Counts(1, 2, 1)),
        (UNITTEST_OK, Counts(5, 0, 0)),
        (UNITTEST_OK_SKIPPED, Counts(3, 0, 2)),
        (JEST, Counts(3, 1, 0)),
        ("Tests:       2 skipped, 1 todo, 5 passed, 8 total\n", Counts(5, 0, 3)),
        (GO, Counts(1, 1, 0)),  # tests from --- PASS/FAIL lines
        (GO_PACKAGES, Counts(1, 1, 1)),  # packages, when no test lines
        (CARGO, Counts(3, 0, 1)),
        (CARGO_FAILED, Counts(1, 1, 1)),
    ],
    ids=[
        "pytest-q",
        "pytest-verbose",
        "pytest-errors",
        "pytest-no-time",
        "pytest-ansi",
        "unittest-failed",
        "unittest-ok",
        "unittest-skipped",
        "jest",
        "jest-skipped",
        "go",
        "go-packages",
        "cargo",
        "cargo-failed",
    ],
)
def test_parse_counts(output: str, expected: Counts) -> None:
    assert parse_counts(output) == expected


def test_unknown_output_has_no_counts() -> None:
    assert parse_counts("compiling...\nall good\n") == Counts()
    assert parse_counts([]) == Counts()


def test_accepts_lines() -> None:
    assert parse_counts(["Ran 2 tests in 0.1s", "", "OK"]) == Counts(2, 0, 0)


NODE_TAP = """\
TAP version 13
# Subtest: adds
ok 1 - adds
not ok 2 - subtracts
# tests 2
# suites 0
# pass 1
# fail 1
# cancelled 0
# skipped 0
# todo 0
"""
MOCHA = "  3 passing (12ms)\n  1 pending\n  2 failing\n\n  1) calc\n       subtracts:\n"
VITEST = " Test Files  1 passed (1)\n      Tests  4 passed | 1 skipped (5)\n"


@pytest.mark.parametrize(
    ("output", "expected"),
    [(NODE_TAP, Counts(1, 1, 0)), (MOCHA, Counts(3, 2, 1))],
    ids=["node-test", "mocha"],
)
def test_node_runners(output: str, expected: Counts) -> None:
    assert parse_counts(output) == expected


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="0.1">
<testcase classname="tests.test_a" name="test_ok" time="0.001"/>
<testcase classname="tests.test_a" name="test_ok2" time="0.001"/>
<testcase classname="tests.test_a.TestX" name="test_bad" file="tests/test_a.py" time="0.001">
<failure message="assert 1 == 2">x</failure></testcase>
<testcase classname="tests.test_b" name="test_err" time="0.001"><error message="boom">y</error></testcase>
<testcase classname="tests.test_b" name="test_skip" time="0.001"><skipped message="no"/></testcase>
</testsuite></testsuites>
"""


def test_parse_junit(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    assert parse_junit(path) is None
    path.write_text(JUNIT)
    report = parse_junit(path)
    assert report is not None
    assert report.counts == Counts(2, 2, 1)
    assert report.first_failure == "tests/test_a.py::TestX::test_bad"
    path.write_text("<testsuites><testsuite tests='0'/></testsuites>")
    empty = parse_junit(path)
    assert empty is not None and empty.counts == Counts(0, 0, 0) and empty.counts.ran == 0
    path.write_text("<testsuites><oops")
    assert parse_junit(path) is None


@pytest.mark.parametrize(
    ("output", "name"),
    [
        (PYTEST_MIXED, "test_s.py::test_b"),
        ("FAIL: test_x (test_s.T.test_x)\n", "test_s.T.test_x"),
        ("FAIL: test_x (test_s.T)\n", "test_s.T.test_x"),  # Python before 3.11
        (GO, "TestSub"),
        ("test tests::b ... FAILED\n", "tests::b"),
        (NODE_TAP, "subtracts"),
        (JEST, "sub \u203a subtracts"),
        ("all good\n", None),
    ],
)
def test_first_failure(output: str, name: str | None) -> None:
    assert first_failure(output) == name


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("collected 0 items\n\n===== no tests ran in 0.01s =====", "pytest collected no tests"),
        ("\nRan 0 tests in 0.000s\n\nOK\n", "unittest ran 0 tests"),
        ("No tests found, exiting with code 1\n", "jest found no tests"),
        ("# tests 0\n# pass 0\n", "node --test ran 0 tests"),
        ("  0 passing (2ms)\n", "mocha ran 0 tests"),
        ("testing: warning: no tests to run\nPASS\n", "go test found no tests to run"),
        (UNITTEST_OK, None),
    ],
)
def test_no_tests_reason(output: str, reason: str | None) -> None:
    assert no_tests_reason(output) == reason

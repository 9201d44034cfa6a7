"""What a human sees of the test gate: `ticketflow status` lines, submit's note, submit-time refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from activities.settings import RepoConfig, Settings
from clients import tickets
from clients.cli import checks_lines
from workflows.contracts import CheckOutcome, CheckReport, Ticket, TicketStatus
from workflows.visibility import render_details


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETFLOW_CONFIG", os.devnull)  # an empty configuration
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))


def status(**fields: object) -> TicketStatus:
    return TicketStatus.model_validate({"ticket_id": "T-1", "title": "t", **fields})


def test_status_before_any_test_run_shows_the_command_and_why() -> None:
    st = status(
        test_command="python -m pytest -q",
        test_command_source="detected",
        test_command_reason="pytest: conftest.py",
    )
    assert checks_lines(st) == ["tests      python -m pytest -q  (detected: pytest: conftest.py)"]
    assert checks_lines(status()) == []


def test_status_shows_outcome_counts_duration_and_first_failure() -> None:
    report = CheckReport(
        passed=False,
        command="python -m pytest -q",
        exit_code=1,
        passed_count=448,
        failed_count=2,
        skipped_count=3,
        duration_seconds=12.34,
        counts_from="junit",
        outcome=CheckOutcome.FAILED,
        command_source="detected",
        command_reason="pytest: pytest-style tests (bare test functions) in tests/test_a.py",
        reason="exit 1 (2 failed)",
        first_failure="tests/test_a.py::test_parse",
    )
    lines = checks_lines(status(last_checks=report))
    assert lines == [
        "tests      python -m pytest -q  (detected: pytest: pytest-style tests (bare test functions) in "
        "tests/test_a.py)",
        "checks     failed: 448 passed, 2 failed, 3 skipped (JUnit report) in 12.3s, exit 1",
        "why        exit 1 (2 failed)",
        "first fail tests/test_a.py::test_parse",
    ]


def test_status_of_an_environment_error_says_what_to_fix() -> None:
    report = CheckReport(
        passed=False,
        command="cargo test",
        exit_code=127,
        outcome=CheckOutcome.ENV_ERROR,
        command_source="configured",
        command_reason="[repos.r] test_command",
        reason="the test runner was not found (exit 127): sh: 1: cargo: not found",
        env_hint="install `cargo` on the worker",
    )
    lines = checks_lines(status(last_checks=report))
    assert (
        "checks     env_error: unknown (the runner's output has no count we can read) in 0.0s, exit 127"
        in lines
    )
    assert "fix        install `cargo` on the worker" in lines


def test_submit_note_names_where_the_command_comes_from() -> None:
    settings = Settings(repos={"r": RepoConfig(url="/x", test_command="make check")})
    own = Ticket(id="a", title="t", body="b", repo="r", test_command="tox")
    assert tickets.test_command_note(own, settings) == "tests: `tox` (from the ticket)"
    configured = Ticket(id="a", title="t", body="b", repo="r")
    assert "configured: [repos.r] test_command" in tickets.test_command_note(configured, settings)
    detected = Ticket(id="a", title="t", body="b", repo="/elsewhere")
    assert "detected when its worktree is prepared" in tickets.test_command_note(detected, settings)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=path,
            check=True,
            capture_output=True,
        )
    return path


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("/nowhere/venv/bin/python -m pytest", "/nowhere/venv/bin/python in the test command does not exist"),
        ("{state}/envs/x/bin/pytest", "inside ticketflow's state directory"),
    ],
)
def test_submit_refuses_a_test_command_the_sandbox_cannot_show(
    tmp_path: Path, repo: Path, command: str, error: str
) -> None:
    settings = Settings(state_dir=tmp_path / "state", repo_check_timeout_seconds=10)
    (settings.state_dir / "envs" / "x" / "bin").mkdir(parents=True)
    (settings.state_dir / "envs" / "x" / "bin" / "pytest").write_text("")
    ticket = Ticket(
        id="a", title="t", body="b", repo=str(repo), test_command=command.format(state=settings.state_dir)
    )
    with pytest.raises(tickets.TicketOperationError) as err:
        asyncio.run(tickets.validate_repo(ticket, settings))
    assert "test_command:" in str(err.value) and error in str(err.value)


def test_web_ui_details_show_the_command_and_the_last_run() -> None:
    report = CheckReport(
        passed=False,
        command="cargo test",
        passed_count=3,
        failed_count=1,
        outcome=CheckOutcome.FAILED,
        command_source="detected",
        first_failure="tests::adds",
    )
    details = render_details(status(last_checks=report))
    assert "**Tests:** `cargo test` (detected)" in details
    assert "**Last test run:** failed (3 passed, 1 failed); first failing: `tests::adds`" in details
    before = render_details(status(test_command="npm test --silent", test_command_source="configured"))
    assert "**Tests:** `npm test --silent` (configured)" in before and "Last test run" not in before

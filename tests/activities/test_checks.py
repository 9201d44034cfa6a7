from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import project_env
from activities.checks import NO_COMMAND, CheckActivities, environment_problem, judge, run_for_agent
from activities.heartbeat import with_heartbeats
from activities.proc import ProcessResult
from activities.settings import RepoConfig, Settings
from activities.test_report import Counts
from workflows.contracts import CheckOutcome, CheckReport, ChecksRequest, Workspace

FAILING_TEST = """import unittest


class Broken(unittest.TestCase):
    def test_broken(self):
        self.assertEqual(1, 2)
"""


async def run_checks(
    local_settings: Settings, workspace: Workspace, env: ActivityEnvironment | None = None, **fields: object
) -> CheckReport:
    req = ChecksRequest.model_validate({"workspace": workspace, **fields})
    report: CheckReport = await (env or ActivityEnvironment()).run(
        CheckActivities(local_settings).run_checks, req
    )
    return report


def configure(settings: Settings, workspace: Workspace, **repo: object) -> None:
    settings.repos = {"calc": RepoConfig.model_validate({"url": workspace.repo_url, **repo})}


async def test_passing_unittest_suite(local_settings: Settings, workspace: Workspace) -> None:
    report = await run_checks(local_settings, workspace)
    assert report.outcome is CheckOutcome.PASSED and report.passed, report.output_tail
    assert report.exit_code == 0 and not report.timed_out
    assert report.command == "python -m unittest discover -v"
    assert report.command_source == "detected" and "unittest.TestCase" in report.command_reason
    assert (report.passed_count, report.failed_count, report.skipped_count) == (2, 0, 0)
    assert report.counts_from == "summary" and report.first_failure is None
    assert "Ran 2 tests" in report.output_tail
    assert report.duration_seconds > 0
    # A venv of the project's own (standard library only: nothing declared), never the worker's Python.
    assert "python venv" in report.environment
    envs = list((local_settings.state_dir / "envs").glob("*/ticketflow-env.json"))
    assert len(envs) == 1


async def test_failing_tests_are_a_result_with_the_first_failing_test(
    local_settings: Settings, workspace: Workspace
) -> None:
    (Path(workspace.path) / "tests" / "test_broken.py").write_text(FAILING_TEST)
    report = await run_checks(local_settings, workspace)
    assert report.outcome is CheckOutcome.FAILED and not report.passed and report.exit_code == 1
    assert (report.passed_count, report.failed_count) == (2, 1)
    assert report.first_failure == "tests.test_broken.Broken.test_broken"
    assert "FAILED (failures=1)" in report.output_tail


@pytest.mark.slow
async def test_pytest_runs_in_the_project_environment_with_junit_counts(
    local_settings: Settings, workspace: Workspace
) -> None:
    root = Path(workspace.path)
    (root / "tests" / "test_more.py").write_text(
        "import pytest\n\n\ndef test_ok():\n    assert 1\n\n\n@pytest.mark.skip\ndef test_skipped():\n"
        "    pass\n\n\ndef test_bad():\n    assert 2 + 2 == 5\n"
    )
    report = await run_checks(local_settings, workspace)
    # Detection switched to pytest (the suite has pytest-style tests), which the project env brings.
    assert report.command == "python -m pytest -q" and report.command_source == "detected"
    assert report.outcome is CheckOutcome.FAILED, report.output_tail
    assert (report.passed_count, report.failed_count, report.skipped_count) == (3, 1, 1)
    assert report.counts_from == "junit"
    assert report.first_failure == "tests/test_more.py::test_bad"
    assert "+ pytest" in report.environment
    # The check run must not leave caches (or the JUnit file) that the next WIP commit would pick up.
    assert not list(root.rglob("__pycache__")) and not list(root.rglob("*.xml"))
    assert not (root / ".pytest_cache").exists()


async def test_timeout(local_settings: Settings, workspace: Workspace) -> None:
    report = await run_checks(
        local_settings, workspace, test_command="echo started; sleep 5", timeout_seconds=0.5
    )
    assert report.outcome is CheckOutcome.TIMED_OUT and report.timed_out and not report.passed
    assert report.exit_code is None and report.command_source == "ticket"
    assert "started" in report.output_tail
    assert report.duration_seconds < 4


async def test_no_test_command(local_settings: Settings, workspace: Workspace) -> None:
    shutil.rmtree(Path(workspace.path) / "tests")
    report = await run_checks(local_settings, workspace)
    assert report.outcome is CheckOutcome.NO_COMMAND and not report.passed
    assert report.command == NO_COMMAND and report.command_source is None
    assert "no test files" in report.reason and report.tests_required
    assert report.env_hint is not None and "require_tests = false" in report.env_hint


@pytest.mark.slow
async def test_zero_tests_collected_is_no_tests(local_settings: Settings, workspace: Workspace) -> None:
    root = Path(workspace.path)
    shutil.rmtree(root / "tests")
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("")
    configure(local_settings, workspace, require_tests=False)
    unittest_report = await run_checks(
        local_settings, workspace, test_command="python -m unittest discover -v"
    )
    assert unittest_report.outcome is CheckOutcome.NO_TESTS and not unittest_report.passed
    assert unittest_report.passed_count == 0 and "ran 0 tests" in unittest_report.reason
    assert unittest_report.tests_required is False
    (root / "pytest.ini").write_text("[pytest]\n")
    pytest_report = await run_checks(local_settings, workspace, test_command="python -m pytest -q")
    assert pytest_report.outcome is CheckOutcome.NO_TESTS and pytest_report.exit_code == 5
    assert "collected no tests" in pytest_report.reason


async def test_missing_runner_is_an_environment_error(local_settings: Settings, workspace: Workspace) -> None:
    report = await run_checks(local_settings, workspace, test_command="no-such-runner --all")
    assert report.outcome is CheckOutcome.ENV_ERROR and report.exit_code == 127
    assert "was not found" in report.reason and "no-such-runner" in report.reason
    assert report.env_hint is not None and "install `no-such-runner`" in report.env_hint


async def test_missing_runner_module_is_an_environment_error(
    local_settings: Settings, workspace: Workspace
) -> None:
    report = await run_checks(local_settings, workspace, test_command="python -m nosuchrunner tests")
    assert report.outcome is CheckOutcome.ENV_ERROR, report.output_tail
    assert "No module named nosuchrunner" in report.reason
    assert report.env_hint is not None and "setup_command" in report.env_hint


async def test_configured_path_that_does_not_exist_is_refused(
    local_settings: Settings, workspace: Workspace
) -> None:
    report = await run_checks(local_settings, workspace, test_command="/nowhere/venv/bin/python -m pytest")
    assert report.outcome is CheckOutcome.ENV_ERROR and report.exit_code is None
    assert "/nowhere/venv/bin/python" in report.reason and "does not exist" in report.reason


async def test_configured_venv_under_a_hidden_directory_is_mounted(
    local_settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    # tmp_path is under /tmp, which the test sandbox replaces: the venv is shown read-only.
    venv = tmp_path / "own-venv"
    subprocess.run([project_env.base_python(), "-m", "venv", "--without-pip", str(venv)], check=True)
    configure(local_settings, workspace, test_command=f"{venv}/bin/python -m unittest discover -v")
    report = await run_checks(local_settings, workspace)
    assert report.outcome is CheckOutcome.PASSED, report.output_tail
    assert report.command_source == "configured" and "[repos.calc] test_command" in report.command_reason
    assert report.passed_count == 2
    assert not (local_settings.state_dir / "envs").exists() or not list(
        (local_settings.state_dir / "envs").glob("*/ticketflow-env.json")
    ), "a command naming its own interpreter needs no project environment"


@pytest.mark.slow
async def test_setup_command_runs_once_per_environment_and_its_bin_comes_first(
    local_settings: Settings, workspace: Workspace
) -> None:
    setup = (
        'printf "#!/bin/sh\\necho tool-from-env\\n" > "$VIRTUAL_ENV/bin/projtool" && '
        'chmod +x "$VIRTUAL_ENV/bin/projtool" && echo built >> "$VIRTUAL_ENV/setup-runs"'
    )
    configure(local_settings, workspace, setup_command=setup)
    command = "projtool && python -m unittest discover -v"
    first = await run_checks(local_settings, workspace, test_command=command)
    second = await run_checks(local_settings, workspace, test_command=command)
    for report in (first, second):
        assert report.outcome is CheckOutcome.PASSED, report.output_tail
        assert "tool-from-env" in report.output_tail and report.passed_count == 2
    (env,) = [p.parent for p in (local_settings.state_dir / "envs").glob("*/ticketflow-env.json")]
    assert (env / "setup-runs").read_text() == "built\n"
    assert json.loads((env / "ticketflow-env.json").read_text())["steps"][-1].startswith("setup_command")
    # A change to the dependency files is a new environment.
    (Path(workspace.path) / "requirements.txt").write_text("\n")
    await run_checks(local_settings, workspace, test_command=command)
    assert len(list((local_settings.state_dir / "envs").glob("*/ticketflow-env.json"))) == 2


@pytest.mark.slow
async def test_failing_setup_is_an_environment_error(local_settings: Settings, workspace: Workspace) -> None:
    configure(local_settings, workspace, setup_command="echo resolving; exit 3")
    report = await run_checks(local_settings, workspace)
    assert report.outcome is CheckOutcome.ENV_ERROR and not report.passed
    assert "setup_command: echo resolving; exit 3 exited 3" in report.reason
    assert "resolving" in report.output_tail
    assert report.env_hint is not None and "fix setup_command" in report.env_hint
    assert not list((local_settings.state_dir / "envs").glob("*/ticketflow-env.json")), "never marked ready"


async def test_concurrent_runs_build_one_environment(local_settings: Settings, workspace: Workspace) -> None:
    configure(local_settings, workspace, setup_command='sleep 0.5; echo built >> "$VIRTUAL_ENV/setup-runs"')
    reports = await asyncio.gather(*(run_checks(local_settings, workspace) for _ in range(3)))
    assert all(r.outcome is CheckOutcome.PASSED for r in reports), [r.output_tail for r in reports]
    (env,) = [p.parent for p in (local_settings.state_dir / "envs").glob("*/ticketflow-env.json")]
    assert (env / "setup-runs").read_text() == "built\n"


async def test_environment_is_an_allowlist_and_output_is_redacted(
    local_settings: Settings, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET_SETTING", "leaky")
    local_settings.github_token = SecretStr("configured-token-value")
    report = await run_checks(
        local_settings,
        workspace,
        test_command="env; echo configured-token-value; echo 'Ran 1 test in 0s'; echo OK",
    )
    assert "CI=true" in report.output_tail
    assert "WORKER_SECRET_SETTING" not in report.output_tail
    assert "configured-token-value" not in report.output_tail and "***" in report.output_tail
    # The project environment comes first on PATH; ticketflow's own interpreter is nowhere on it.
    path_line = next(line for line in report.output_tail.splitlines() if line.startswith("PATH="))
    assert path_line.split("=", 1)[1].split(":")[0].endswith("/bin")
    assert str(Path(sys.executable).parent) not in path_line.split(":")


async def test_output_tail_is_bounded(local_settings: Settings, workspace: Workspace) -> None:
    command = (
        "i=0; while [ $i -lt 300 ]; do echo line-$i-$(printf 'x%.0s' $(seq 150)); i=$((i+1)); done; "
        "python -m unittest discover -v 2>/dev/null"
    )
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    report = await run_checks(local_settings, workspace, env, test_command=command)
    assert report.outcome is CheckOutcome.PASSED
    assert len(report.output_tail.encode()) <= 8 * 1024
    assert report.output_tail.endswith("line-299-" + "x" * 150)
    assert len(beats) >= 300  # one per output line (the SDK throttles what it sends)


async def test_missing_worktree(local_settings: Settings, workspace: Workspace, tmp_path: Path) -> None:
    gone = workspace.model_copy(update={"path": str(tmp_path / "gone")})
    with pytest.raises(ApplicationError) as err:
        await run_checks(local_settings, gone)
    assert err.value.type == "WorkspaceMissing"


def result(exit_code: int | None, *, timed_out: bool = False) -> ProcessResult:
    return ProcessResult(exit_code=exit_code, timed_out=timed_out)


@pytest.mark.parametrize(
    ("exit_code", "counts", "output", "command", "outcome"),
    [
        (0, Counts(3, 0, 0), "", "python -m pytest", CheckOutcome.PASSED),
        (0, Counts(0, 0, 0), "", "python -m pytest", CheckOutcome.NO_TESTS),
        (0, Counts(0, 0, 4), "", "cargo test", CheckOutcome.NO_TESTS),  # every test skipped
        (5, Counts(0, 0, 0), "collected 0 items", "python -m pytest", CheckOutcome.NO_TESTS),
        (1, Counts(), "No tests found, exiting with code 1", "npm test", CheckOutcome.NO_TESTS),
        (0, Counts(), "Ran 0 tests in 0.000s\n\nOK", "python -m unittest", CheckOutcome.NO_TESTS),
        (0, Counts(), "all good", "./check.sh", CheckOutcome.PASSED),  # counts unknown, said so
        (1, Counts(1, 1, 0), "", "python -m pytest", CheckOutcome.FAILED),
        (127, Counts(), "sh: 1: cargo: not found", "cargo test", CheckOutcome.ENV_ERROR),
        (126, Counts(), "sh: 1: ./t: Permission denied", "./t", CheckOutcome.ENV_ERROR),
        (
            1,
            Counts(),
            "/usr/bin/python3: No module named pytest",
            "python3 -m pytest",
            CheckOutcome.ENV_ERROR,
        ),
        (4, Counts(), "error: unrecognized arguments: --cov", "pytest", CheckOutcome.ENV_ERROR),
        (2, Counts(), "E   ModuleNotFoundError: No module named 'pytest_foo'", "pytest", CheckOutcome.FAILED),
    ],
)
def test_judge(exit_code: int, counts: Counts, output: str, command: str, outcome: CheckOutcome) -> None:
    assert judge(result(exit_code), counts, output.splitlines(), command, 60).outcome is outcome


def test_timed_out_beats_everything() -> None:
    verdict = judge(result(None, timed_out=True), Counts(), [], "pytest", 60)
    assert verdict.outcome is CheckOutcome.TIMED_OUT and "60s" in verdict.reason


def test_environment_problem_names_the_evidence() -> None:
    problem = environment_problem(127, ["running", "sh: 1: jest: not found"], "npm test")
    assert problem is not None and "jest: not found" in problem.reason
    assert problem.hint is not None and problem.hint.startswith("install `jest` on the worker")
    assert environment_problem(1, ["FAILED test_x.py::test_y"], "python -m pytest") is None


async def test_with_heartbeats_beats_while_waiting() -> None:
    env = ActivityEnvironment()
    beats: list[tuple[object, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def slow() -> str:
        return await with_heartbeats(asyncio.sleep(0.3, "done"), 0.05, "waiting")

    assert await env.run(slow) == "done"
    assert len(beats) >= 3 and beats[0] == ("waiting",)


async def test_an_agents_own_test_run_gets_the_same_verdict(
    local_settings: Settings, workspace: Workspace
) -> None:
    root = Path(workspace.path)
    (root / "tests" / "test_broken.py").write_text(FAILING_TEST)
    lines: list[str] = []
    text = await run_for_agent(local_settings, root, workspace, None, 60, lines.append, 4000)
    assert text.startswith("python -m unittest discover -v: FAILED (exit 1 (1 failed))")
    assert "first failing test: tests.test_broken.Broken.test_broken" in text
    assert len(text) <= 4000 and lines, "the output streams to the agent's log"
    missing = await run_for_agent(local_settings, root, workspace, "no-such-runner", 60, lines.append, 4000)
    assert missing.startswith("no-such-runner: ENV_ERROR (the test runner was not found (exit 127)")


@pytest.mark.slow
async def test_an_environment_unused_for_a_week_goes_when_a_newer_one_is_built(
    local_settings: Settings, workspace: Workspace
) -> None:
    configure(local_settings, workspace, setup_command="echo first")
    await run_checks(local_settings, workspace)
    (old,) = [p.parent for p in (local_settings.state_dir / "envs").glob("*/ticketflow-env.json")]
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old / "ticketflow-env.json", (week_ago, week_ago))
    configure(local_settings, workspace, setup_command="echo second")
    report = await run_checks(local_settings, workspace)
    assert report.outcome is CheckOutcome.PASSED
    (new,) = [p.parent for p in (local_settings.state_dir / "envs").glob("*/ticketflow-env.json")]
    assert new != old and not old.exists()
    # One in use (its marker touched by the run) stays.
    configure(local_settings, workspace, setup_command="echo third")
    await run_checks(local_settings, workspace)
    assert new.exists()

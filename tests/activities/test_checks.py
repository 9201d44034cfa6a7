from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.checks import NO_COMMAND, CheckActivities, worker_python
from activities.heartbeat import with_heartbeats
from activities.settings import Settings
from workflows.contracts import CheckReport, ChecksRequest, Workspace

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


async def test_passing_unittest_suite(local_settings: Settings, workspace: Workspace) -> None:
    report = await run_checks(local_settings, workspace)
    assert report.passed and report.exit_code == 0 and not report.timed_out
    assert report.command == "python -m unittest discover -v"
    assert (report.passed_count, report.failed_count, report.skipped_count) == (2, 0, 0)
    assert "Ran 2 tests" in report.output_tail
    assert report.duration_seconds > 0


async def test_failing_tests_are_a_result(local_settings: Settings, workspace: Workspace) -> None:
    (Path(workspace.path) / "tests" / "test_broken.py").write_text(FAILING_TEST)
    report = await run_checks(local_settings, workspace)
    assert not report.passed and report.exit_code == 1
    assert (report.passed_count, report.failed_count) == (2, 1)
    assert "FAILED (failures=1)" in report.output_tail


async def test_pytest_runs_with_worker_interpreter(local_settings: Settings, workspace: Workspace) -> None:
    report = await run_checks(local_settings, workspace, test_command="python -m pytest -q")
    assert report.passed, report.output_tail
    assert (report.passed_count, report.failed_count, report.skipped_count) == (2, 0, 0)
    # The check run must not leave caches that the next WIP commit would pick up.
    assert not list(Path(workspace.path).rglob("__pycache__"))
    assert not (Path(workspace.path) / ".pytest_cache").exists()


async def test_timeout(local_settings: Settings, workspace: Workspace) -> None:
    report = await run_checks(
        local_settings, workspace, test_command="echo started; sleep 5", timeout_seconds=0.5
    )
    assert report.timed_out and not report.passed
    assert report.exit_code is None
    assert "started" in report.output_tail
    assert report.duration_seconds < 4


async def test_no_test_command(local_settings: Settings, workspace: Workspace) -> None:
    bare = workspace.model_copy(update={"test_command": None})
    report = await run_checks(local_settings, bare)
    assert report.passed and report.command == NO_COMMAND
    assert "no test command" in report.output_tail


async def test_environment_is_an_allowlist_and_output_is_redacted(
    local_settings: Settings, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET_SETTING", "leaky")
    local_settings.github_token = SecretStr("configured-token-value")
    report = await run_checks(local_settings, workspace, test_command="env; echo configured-token-value")
    assert "CI=true" in report.output_tail
    assert "WORKER_SECRET_SETTING" not in report.output_tail
    assert "configured-token-value" not in report.output_tail and "***" in report.output_tail


async def test_output_tail_is_bounded(local_settings: Settings, workspace: Workspace) -> None:
    command = "i=0; while [ $i -lt 300 ]; do echo line-$i-$(printf 'x%.0s' $(seq 150)); i=$((i+1)); done"
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    report = await run_checks(local_settings, workspace, env, test_command=command)
    assert report.passed
    assert len(report.output_tail.encode()) <= 8 * 1024
    assert report.output_tail.endswith("line-299-" + "x" * 150)
    assert len(beats) >= 300  # one per output line (the SDK throttles what it sends)


async def test_missing_worktree(local_settings: Settings, workspace: Workspace, tmp_path: Path) -> None:
    gone = workspace.model_copy(update={"path": str(tmp_path / "gone")})
    with pytest.raises(ApplicationError) as err:
        await run_checks(local_settings, gone)
    assert err.value.type == "WorkspaceMissing"


def test_worker_python() -> None:
    assert worker_python("python -m pytest -q").endswith(" -m pytest -q")
    assert worker_python("python3 -m unittest").startswith(sys.executable)
    assert worker_python("pythonic stuff") == "pythonic stuff"
    assert worker_python("make test") == "make test"


async def test_with_heartbeats_beats_while_waiting() -> None:
    env = ActivityEnvironment()
    beats: list[tuple[object, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def slow() -> str:
        return await with_heartbeats(asyncio.sleep(0.3, "done"), 0.05, "waiting")

    assert await env.run(slow) == "done"
    assert len(beats) >= 3 and beats[0] == ("waiting",)

"""SIGKILL the worker while its agent runs: a new worker resumes from the checkpoint, nothing is redone,
and the ticket ends with exactly one PR. Workers are real `ticketflow worker` subprocesses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from bench.recovery import Rig, crash_and_recover

pytestmark = pytest.mark.asyncio(loop_scope="session")
# The restarted worker reclaims the dead worker's attempt, so it retries after the first retry interval
# (5 s) rather than run_agent's 60 s heartbeat timeout; a generous bound, not a timing claim.
RECOVERY_BOUND = 40.0


async def test_killed_worker_resumes_from_checkpoint_with_one_pr(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = temporal_env.client.service_client.config.target_host
    rig = Rig(tmp_path, address, reclaim=True, steps=2, step_seconds=2.5)
    try:
        crash = await crash_and_recover(rig, temporal_env.client)
    except BaseException:
        print(rig.worker_logs())
        raise
    finally:
        rig.stop()

    assert crash.state == "DONE"
    assert crash.done_lines == ["done 1", "done 2"], "each step completed exactly once"
    assert crash.steps_redone == 0
    assert crash.attempts[1].endswith("resume 1"), "the second attempt started after step 1's checkpoint"
    assert crash.prs == 1
    assert crash.recovery_seconds < RECOVERY_BOUND
    # Both steps' files are on the pushed branch (the DONE ticket's worktree went back to the pool).
    branch = git(rig.remote, "for-each-ref", "--format=%(refname)", "refs/heads/ticketflow/crash-1-*").strip()
    for n in (1, 2):
        assert git(rig.remote, "show", f"{branch}:step{n}.txt") == f"step {n}\n"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout

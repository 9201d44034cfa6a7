"""The run_checks activity: run the project's test command in the ticket's worktree.

Failing tests are a result (passed=False) that the workflow feeds back to the agent; only a problem
with the infrastructure itself, such as a vanished worktree, raises.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agents import sandbox
from activities.heartbeat import with_heartbeats
from activities.proc import run_process
from activities.redact import redact
from activities.settings import Settings
from activities.test_report import parse_counts
from workflows.contracts import CheckReport, ChecksRequest, Workspace

NO_COMMAND = "(no test command detected)"
TAIL_LINES = 80
TAIL_BYTES = 8 * 1024
# Lines kept for count parsing: summaries come last, but go test prints one line per package.
PARSE_LINES = 2000
# The worker's environment may hold tokens; tests see only these variables.
ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR")
_LEADING_PYTHON = re.compile(r"^python3?(?=\s|$)")


def require_worktree(workspace: Workspace) -> Path:
    path = Path(workspace.path)
    if not (path / ".git").exists():
        raise ApplicationError(
            f"worktree {path} is missing on this worker", type="WorkspaceMissing", non_retryable=True
        )
    return path


def worker_python(command: str) -> str:
    """Point a leading `python`/`python3` at the worker's own interpreter."""
    return _LEADING_PYTHON.sub(lambda _: shlex.quote(sys.executable), command.strip(), count=1)


def check_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in ENV_ALLOWLIST if key in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env["CI"] = "true"
    # Caches written into the worktree would be committed with the agent's next WIP commit.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTEST_ADDOPTS"] = "-p no:cacheprovider"
    return env


def bounded_tail(lines: list[str], secrets: list[str]) -> str:
    text = "\n".join(lines[-TAIL_LINES:])
    if len(text.encode()) > TAIL_BYTES:
        text = text.encode()[-TAIL_BYTES:].decode(errors="ignore")
    return redact(text, secrets)


class CheckActivities:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="run_checks")
    async def run_checks(self, req: ChecksRequest) -> CheckReport:
        path = require_worktree(req.workspace)
        command = req.test_command or req.workspace.test_command
        if not command:
            return CheckReport(passed=True, command=NO_COMMAND, output_tail="no test command was detected")
        # Offline and unable to touch anything but the worktree, unless configured otherwise.
        argv = sandbox.wrap(
            ["/bin/sh", "-c", worker_python(command)], sandbox.checks_plan(self._settings, path)
        )
        run = run_process(
            argv,
            cwd=path,
            env=check_env(),
            timeout=req.timeout_seconds,
            on_line=lambda _: activity.heartbeat(),
            tail_lines=PARSE_LINES,
        )
        result = await with_heartbeats(run, 5.0)
        counts = parse_counts(result.tail)
        return CheckReport(
            passed=result.ok,
            command=command,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            passed_count=counts.passed,
            failed_count=counts.failed,
            skipped_count=counts.skipped,
            duration_seconds=round(result.duration_seconds, 3),
            output_tail=bounded_tail(result.tail, self._settings.secret_values()),
        )

"""The run_checks activity: run the project's test command in the ticket's worktree, and say truly what
happened.

The command is decided by activities/stack.py (decide_test_command); it runs in the repository's
project environment (activities/project_env.py), inside the test sandbox, offline. The report's outcome
(workflows/contracts.py CheckOutcome) is PASSED only when at least one test ran and the runner exited 0;
a run that collected no tests, a missing command, a runner that cannot start and a broken environment
each have an outcome of their own, with the reason and what to do about it. Failing tests are a result
the workflow feeds back to the agent; only a problem with the infrastructure itself, such as a vanished
worktree, raises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shlex
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import project_env, stack
from activities.agents import sandbox
from activities.heartbeat import with_heartbeats
from activities.proc import ProcessResult, run_process
from activities.redact import redact
from activities.repos import ResolvedRepo
from activities.settings import RepoConfig, Settings
from activities.test_report import Counts, first_failure, no_tests_reason, parse_counts, parse_junit
from workflows.contracts import CheckOutcome, CheckReport, ChecksRequest, Workspace

NO_COMMAND = "(no test command)"
TAIL_LINES = 80
TAIL_BYTES = 8 * 1024
# Lines kept for count parsing: summaries come last, but go test prints one line per package.
PARSE_LINES = 2000
# The worker's environment may hold tokens; tests see only these variables.
ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR")
JUNIT_NAME = "junit.xml"
_NOT_FOUND = re.compile(
    r"(not found|No such file or directory|cannot execute|Permission denied|bad interpreter)"
)
_BROKEN_ENV = re.compile(
    r"(error while loading shared libraries|bad interpreter|Could not find platform|^bwrap: )"
)
# "sh: 1: jest: not found", "bash: line 1: cargo: command not found": the program the shell missed.
_MISSING_PROGRAM = re.compile(r"([\w.+-]+): (?:command )?not found")
_USAGE_ERROR = re.compile(r"(unrecognized arguments|no such option|error: argument)")


def require_worktree(workspace: Workspace) -> Path:
    path = Path(workspace.path)
    if not (path / ".git").exists():
        raise ApplicationError(
            f"worktree {path} is missing on this worker", type="WorkspaceMissing", non_retryable=True
        )
    return path


def check_env() -> dict[str, str]:
    """The allowlisted base of every test run's environment (the worker's PATH: no interpreter of
    ticketflow's own is put in front of it; the project environment goes first, see project_env)."""
    env = {key: os.environ[key] for key in ENV_ALLOWLIST if key in os.environ}
    env.setdefault("PATH", os.defpath)
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


# ------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    outcome: CheckOutcome
    reason: str
    hint: str | None = None


def _runner_module(runner: str | None) -> str | None:
    if runner in ("pytest", "unittest", "tox", "nox", "hatch"):
        return runner
    if runner and runner.startswith("python -m "):
        return runner.removeprefix("python -m ")
    return None


def environment_problem(exit_code: int | None, lines: list[str], command: str) -> Verdict | None:
    """A run that says nothing about the code: its runner did not start or its environment is broken."""
    runner = stack.runner_of(command)
    programs = project_env.command_programs(command)
    program = programs[0] if programs else command.split()[0] if command.split() else command
    if exit_code in (126, 127):
        evidence = next((line.strip() for line in reversed(lines) if _NOT_FOUND.search(line)), "")
        missed = _MISSING_PROGRAM.search(evidence)
        program = missed.group(1) if missed else program
        what = "could not be executed" if exit_code == 126 else "was not found"
        reason = f"the test runner {what} (exit {exit_code})" + (f": {evidence[:200]}" if evidence else "")
        hint = (
            f"install `{program}` on the worker, or give the repository a setup_command that provides it; "
            "the test sandbox hides $HOME and /tmp, so a runner installed there is shown only when it is "
            "on the worker's PATH"
        )
        return Verdict(CheckOutcome.ENV_ERROR, reason, hint)
    module = _runner_module(runner)
    if module is not None:
        missing = re.compile(rf"No module named '?{re.escape(module)}'?\s*$")
        line = next((ln.strip() for ln in lines if missing.search(ln)), None)
        if line is not None and exit_code != 0:
            return Verdict(
                CheckOutcome.ENV_ERROR,
                f"the test runner's module is missing: {line[:200]}",
                f"{module} is not installed in the project environment: add it to the project's test "
                "dependencies, or set setup_command for the repository (e.g. `pip install -e .[test]`)",
            )
    if runner == "pytest" and exit_code == 4:
        usage = next((ln.strip() for ln in lines if _USAGE_ERROR.search(ln)), None)
        if usage is not None:
            return Verdict(
                CheckOutcome.ENV_ERROR,
                f"pytest refused its options (exit 4): {usage[:200]}",
                "the project's pytest options need a plugin the environment lacks: add it to the "
                "project's test dependencies or to setup_command",
            )
    broken = next((ln.strip() for ln in lines if _BROKEN_ENV.search(ln)), None)
    if broken is not None and exit_code != 0:
        return Verdict(
            CheckOutcome.ENV_ERROR,
            f"the environment is broken: {broken[:200]}",
            "rebuild the project environment (change setup_command, or remove its envs/ directory)",
        )
    return None


def judge(result: ProcessResult, counts: Counts, lines: list[str], command: str, timeout: float) -> Verdict:
    """The outcome of one test run, from the exit code, the runner's counts and its output."""
    if result.timed_out or result.stalled:
        return Verdict(CheckOutcome.TIMED_OUT, f"the tests did not finish within {timeout:g}s")
    problem = environment_problem(result.exit_code, lines, command)
    if problem is not None:
        return problem
    empty = no_tests_reason(lines)
    runner = stack.runner_of(command)
    no_tests_hint = (
        "add tests (or point test_command at them); to open the PR as a draft labelled `untested` "
        "instead, set require_tests = false for the repository"
    )
    if runner == "pytest" and result.exit_code == 5:
        return Verdict(CheckOutcome.NO_TESTS, "pytest collected no tests (exit 5)", no_tests_hint)
    if counts.known and counts.ran == 0 and not counts.failed and (result.exit_code == 0 or empty):
        skipped = f"; {counts.skipped} skipped" if counts.skipped else ""
        why = empty or "the runner reports 0 tests run"
        return Verdict(CheckOutcome.NO_TESTS, f"{why}{skipped}", no_tests_hint)
    if result.exit_code == 0:
        if not counts.known and empty:
            return Verdict(CheckOutcome.NO_TESTS, empty, no_tests_hint)
        if not counts.known:
            return Verdict(CheckOutcome.PASSED, "exit 0; the output has no test counts we can read")
        return Verdict(CheckOutcome.PASSED, f"{counts.ran} test(s) ran, exit 0")
    if empty and not counts.failed:
        return Verdict(CheckOutcome.NO_TESTS, f"{empty} (exit {result.exit_code})", no_tests_hint)
    failed = f"{counts.failed} failed" if counts.failed is not None else "counts unknown"
    return Verdict(CheckOutcome.FAILED, f"exit {result.exit_code} ({failed})")


# ------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class TestRun:
    """One test run's result and what it needs for a report."""

    __test__ = False

    choice: stack.TestCommand
    result: ProcessResult
    env: project_env.ProjectEnv
    counts: Counts
    counts_from: str | None
    first_failure: str | None


def repo_of(settings: Settings, workspace: Workspace) -> tuple[str, RepoConfig | None, str]:
    """(configured name, its RepoConfig, the repository's key) of a workspace."""
    name, cfg = project_env.repo_config_for(settings, workspace.repo_url)
    return name, cfg, ResolvedRepo(name=name or workspace.repo_url, url=workspace.repo_url).key


async def choose(
    settings: Settings, worktree: Path, workspace: Workspace, ticket_command: str | None
) -> stack.TestCommand:
    """The test command for this worktree now: the ticket's, the repository's, else detected again
    (the agent may have added the project's first tests since the worktree was prepared)."""
    name, cfg, _ = repo_of(settings, workspace)
    ticket_command = ticket_command or (
        workspace.test_command if workspace.test_command_source == "ticket" else None
    )
    repo_command = cfg.test_command if cfg else None
    return await asyncio.to_thread(stack.decide_test_command, worktree, ticket_command, repo_command, name)


async def run_tests(
    settings: Settings,
    worktree: Path,
    workspace: Workspace,
    choice: stack.TestCommand,
    timeout: float,
    on_line: Callable[[str], None],
) -> TestRun:
    """Prepare the project environment (EnvError when it cannot be made) and run the command in it."""
    assert choice.command is not None
    command = choice.command
    _, cfg, key = repo_of(settings, workspace)
    base = check_env()
    env = await project_env.ensure_env(
        settings, key, worktree, command, cfg.setup_command if cfg else None, base, on_line
    )
    reports = settings.state_dir / "check-reports" / uuid.uuid4().hex
    cache = project_env.cache_dir(settings, key)
    for directory in (reports, cache):
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    project = worktree / choice.directory if choice.directory else worktree
    variables = project_env.test_environment(base, settings, key, env, project)
    junit = reports / JUNIT_NAME
    variables["PYTEST_ADDOPTS"] = f"{base['PYTEST_ADDOPTS']} --junitxml={shlex.quote(str(junit))}"
    plan = sandbox.checks_plan(settings, worktree)
    readable = project_env.test_mounts(env, command, base["PATH"])
    plan = dataclasses.replace(
        plan, readable=(*plan.readable, *readable), writable=(*plan.writable, reports, cache)
    )
    try:
        result = await run_process(
            sandbox.wrap(["/bin/sh", "-c", command], plan),
            cwd=worktree,
            env=variables,
            timeout=timeout,
            on_line=on_line,
            tail_lines=PARSE_LINES,
        )
        report = await asyncio.to_thread(parse_junit, junit)
    finally:
        await asyncio.to_thread(shutil.rmtree, reports, True)
    summary = parse_counts(result.tail)
    counts, counts_from = (
        (report.counts, "junit") if report else (summary, "summary" if summary.known else None)
    )
    failure = first_failure(result.tail) or (report.first_failure if report else None)
    return TestRun(choice, result, env, counts, counts_from, failure)


def env_error_report(
    choice: stack.TestCommand, reason: str, hint: str, output: str, secrets: list[str], required: bool
) -> CheckReport:
    return CheckReport(
        passed=False,
        command=choice.command or NO_COMMAND,
        outcome=CheckOutcome.ENV_ERROR,
        command_source=choice.source,
        command_reason=choice.reason,
        reason=redact(reason, secrets),
        env_hint=redact(hint, secrets),
        output_tail=bounded_tail(output.splitlines(), secrets),
        tests_required=required,
    )


class CheckActivities:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="run_checks")
    async def run_checks(self, req: ChecksRequest) -> CheckReport:
        path = require_worktree(req.workspace)
        secrets = self._settings.secret_values()
        name, cfg, _ = repo_of(self._settings, req.workspace)
        required = cfg.require_tests if cfg else True
        choice = await choose(self._settings, path, req.workspace, req.test_command)
        if choice.command is None:
            where = f"[repos.{name}]" if name else "the repository's configuration"
            return CheckReport(
                passed=False,
                command=NO_COMMAND,
                outcome=CheckOutcome.NO_COMMAND,
                command_reason=choice.reason,
                reason=f"no test command: none in the ticket or {where}, and none detected ({choice.reason})",
                env_hint=(
                    f"set test_command in the ticket or in {where}; or set require_tests = false there to "
                    "open the PR as a draft labelled `untested`"
                ),
                output_tail="no test command was given, configured or detected",
                tests_required=required,
            )
        problem = project_env.command_path_problem(choice.command, self._settings)
        if problem is not None:
            hint = "change the test command, or make the path exist on every worker"
            return env_error_report(choice, problem, hint, "", secrets, required)
        try:
            run = await with_heartbeats(
                run_tests(
                    self._settings,
                    path,
                    req.workspace,
                    choice,
                    req.timeout_seconds,
                    lambda _: activity.heartbeat(),
                ),
                5.0,
            )
        except project_env.EnvError as err:
            return env_error_report(choice, err.reason, err.hint, err.output, secrets, required)
        return self._report(run, req.timeout_seconds, required, secrets)

    def _report(self, run: TestRun, timeout: float, required: bool, secrets: list[str]) -> CheckReport:
        assert run.choice.command is not None
        verdict = judge(run.result, run.counts, run.result.tail, run.choice.command, timeout)
        return CheckReport(
            passed=verdict.outcome is CheckOutcome.PASSED,
            command=run.choice.command,
            exit_code=run.result.exit_code,
            timed_out=run.result.timed_out or run.result.stalled,
            passed_count=run.counts.passed,
            failed_count=run.counts.failed,
            skipped_count=run.counts.skipped,
            duration_seconds=round(run.result.duration_seconds, 3),
            output_tail=bounded_tail(run.result.tail, secrets),
            outcome=verdict.outcome,
            command_source=run.choice.source,
            command_reason=redact(run.choice.reason, secrets),
            reason=redact(verdict.reason, secrets),
            first_failure=redact(run.first_failure, secrets) if run.first_failure else None,
            env_hint=verdict.hint,
            counts_from=run.counts_from,
            tests_required=required,
            environment=f"{run.env.name}: {run.env.description}" if run.env.path else run.env.description,
        )


async def run_for_agent(
    settings: Settings,
    worktree: Path,
    workspace: Workspace,
    ticket_command: str | None,
    timeout: float,
    on_line: Callable[[str], None],
    max_chars: int,
) -> str:
    """An agent's own test run (the ollama agent's run_tests tool): the same command, environment,
    sandbox and verdict as run_checks, as text for the model."""
    choice = await choose(settings, worktree, workspace, ticket_command)
    if choice.command is None:
        return f"no test command for this repository ({choice.reason})"
    problem = project_env.command_path_problem(choice.command, settings)
    if problem is not None:
        return f"{choice.command}: ENVIRONMENT ERROR: {problem}"
    try:
        run = await run_tests(settings, worktree, workspace, choice, timeout, on_line)
    except project_env.EnvError as err:
        return f"{choice.command}: ENVIRONMENT ERROR: {err.reason}\n{err.output}"[-max_chars:]
    verdict = judge(run.result, run.counts, run.result.tail, choice.command, timeout)
    head = f"{choice.command}: {verdict.outcome.value.upper()} ({verdict.reason})"
    if run.first_failure:
        head += f"\nfirst failing test: {run.first_failure}"
    body = "\n".join(run.result.tail)[-max(max_chars - len(head) - 1, 0) :]
    return redact(f"{head}\n{body}", settings.secret_values())

"""The `command` agent: any program (a CLI agent, a codemod, a script) run in the worktree.

The program reads the task from $TICKETFLOW_TASK_FILE (JSON) and reports through its output:
  ::ticketflow step::<what was done>    a step is complete: ticketflow commits it as a checkpoint
  ::ticketflow blocked::<question>      it needs a human
or by writing JSON to $TICKETFLOW_OUTCOME_FILE:
  {"status": "done|blocked|usage_limit|rate_limited|failed", "reason": "...", "reset_at": "ISO or epoch",
   "retry_after": seconds, "session_id": "...", "model": "...", "tokens": {"prompt": n, "completion": n}}
Without either, exit code 0 means done and anything else means failed.
$TICKETFLOW_RESUME_STEP says how many steps an earlier attempt already committed, so they are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activities import stack
from activities.agents.base import AgentRun
from activities.agents.streaming import human_seconds
from activities.proc import ProcessResult, paused, run_process
from activities.settings import AgentConfig
from workflows.contracts import AgentResult, TokenUsage

STEP_MARK = "::ticketflow step::"
BLOCKED_MARK = "::ticketflow blocked::"
BASE_ENV = ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ")


def agent_environment(
    config: AgentConfig, run: AgentRun, task_file: Path, outcome_file: Path
) -> dict[str, str]:
    """An allowlist, never the worker's environment: tokens and keys stay out of the agent's reach."""
    env = {k: os.environ[k] for k in (*BASE_ENV, *config.pass_env) if k in os.environ}
    env.update(
        {
            "HOME": str(run.run_dir / "home"),
            "TICKETFLOW_TASK_FILE": str(task_file),
            "TICKETFLOW_OUTCOME_FILE": str(outcome_file),
            "TICKETFLOW_WORKTREE": str(run.worktree),
            "TICKETFLOW_RESUME_STEP": str(run.checkpoint.step),
            "TICKETFLOW_SESSION_ID": run.checkpoint.session_id or "",
            "TICKETFLOW_ITERATION": str(run.request.iteration),
        }
    )
    return env


def task_document(run: AgentRun) -> dict[str, Any]:
    req = run.request
    return {
        "ticket": req.ticket.model_dump(mode="json"),
        "iteration": req.iteration,
        "feedback": req.feedback,
        "guidance": req.guidance,
        "resume": req.resume,
        "session_id": run.checkpoint.session_id,
        "completed_steps": run.checkpoint.step,
        "context": req.workspace.context_summary,
        "test_command": stack.agent_test_command(req.ticket, req.workspace),
        "classification": req.classification.model_dump(mode="json"),
    }


def parse_reset_at(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
        return datetime.fromtimestamp(float(value), tz=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def outcome_from_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return {"status": "failed", "reason": f"agent wrote an unreadable outcome file: {exc}"}
    return data if isinstance(data, dict) else {"status": "failed", "reason": "outcome file is not an object"}


class CommandAgent:
    def __init__(self, name: str, config: AgentConfig) -> None:
        self.name = name
        self.config = config

    async def run(self, run: AgentRun) -> AgentResult:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "home").mkdir(exist_ok=True)
        task_file, outcome_file = run.run_dir / "task.json", run.run_dir / "outcome.json"
        task_file.write_text(json.dumps(task_document(run), indent=2))
        outcome_file.unlink(missing_ok=True)
        steps: list[str] = []
        blocked: list[str] = []

        def on_line(line: str) -> None:
            run.on_line(line)
            if line.startswith(STEP_MARK):
                steps.append(line[len(STEP_MARK) :].strip())
            elif line.startswith(BLOCKED_MARK):
                blocked.append(line[len(BLOCKED_MARK) :].strip())

        proc = await _run_with_step_commits(run, self.config, task_file, outcome_file, on_line, steps)
        result = AgentResult(
            outcome="done",
            agent=self.name,
            session_id=run.checkpoint.session_id,
            steps=run.checkpoint.step,
            output_tail=proc.tail[-40:],
            duration_seconds=proc.duration_seconds,
        )
        return _judge(result, proc, outcome_from_file(outcome_file), blocked, run)


async def _run_with_step_commits(
    run: AgentRun,
    config: AgentConfig,
    task_file: Path,
    outcome_file: Path,
    on_line: Callable[[str], None],
    steps: list[str],
) -> ProcessResult:
    """Run the command; each `step` line is committed right away, in order, as a checkpoint."""
    pending: asyncio.Queue[str | None] = asyncio.Queue()

    def line_sink(line: str) -> None:
        before = len(steps)
        on_line(line)
        if len(steps) > before:
            pending.put_nowait(steps[-1])

    spawned: list[int] = []

    async def committer() -> None:
        # The agent is frozen while its step is committed, so the checkpoint holds exactly that step.
        while (step := await pending.get()) is not None:
            with paused(spawned[0] if spawned else None):
                await run.on_step(step)

    commit_task = asyncio.create_task(committer())
    try:
        proc = await run_process(
            run.wrap(config.command),
            cwd=run.worktree,
            env=agent_environment(config, run, task_file, outcome_file),
            timeout=run.timeout_seconds,
            stall_timeout=run.stall_seconds,
            on_line=line_sink,
            on_spawn=spawned.append,
        )
    finally:
        pending.put_nowait(None)
        await commit_task
    return proc


def _judge(
    result: AgentResult,
    proc: ProcessResult,
    outcome: dict[str, Any] | None,
    blocked: list[str],
    run: AgentRun,
) -> AgentResult:
    if proc.timed_out:
        return result.model_copy(
            update={
                "outcome": "failed",
                "reason": f"agent ran past its execution timeout ({human_seconds(run.timeout_seconds)})",
            }
        )
    if proc.stalled:
        return result.model_copy(
            update={
                "outcome": "failed",
                "reason": f"agent printed nothing for {human_seconds(run.stall_seconds or 0)}",
            }
        )
    if outcome is not None:
        tokens = outcome.get("tokens") or {}
        return result.model_copy(
            update={
                "outcome": outcome.get("status", "failed"),
                "reason": str(outcome.get("reason", "")),
                "reset_at": parse_reset_at(outcome.get("reset_at")),
                "retry_after_seconds": outcome.get("retry_after"),
                "session_id": outcome.get("session_id") or result.session_id,
                "model": outcome.get("model"),
                "tokens": TokenUsage.model_validate(tokens) if tokens else result.tokens,
            }
        )
    if blocked:
        return result.model_copy(update={"outcome": "blocked", "reason": blocked[-1]})
    if proc.exit_code == 0:
        return result
    tail = " | ".join(proc.tail[-3:])
    return result.model_copy(update={"outcome": "failed", "reason": f"agent exited {proc.exit_code}: {tail}"})

"""run_agent: drive the ticket's agent in its worktree, checkpointing each step as a WIP commit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError

from activities import git_guard
from activities.agents import AgentNotConfigured, AgentRun, build_agent, sandbox
from activities.gitops import clear_stale_index_lock, commit_all, head
from activities.live_output import LiveOutput
from activities.redact import LineRedactor, redact, redact_lines
from activities.settings import Settings
from workflows.contracts import AgentCheckpoint, AgentRequest, AgentResult

# A rate limit shorter than this is waited out by Temporal's retry; longer ones go back to the workflow,
# which waits on a durable timer and frees the worker slot.
SHORT_RATE_LIMIT_SECONDS = 300
HEARTBEAT_EVERY_SECONDS = 5.0
log = logging.getLogger("ticketflow.agent")


def load_checkpoint(req: AgentRequest) -> AgentCheckpoint:
    """Heartbeat details come back untyped (a dict); re-validate them."""
    details = activity.info().heartbeat_details
    if details:
        return AgentCheckpoint.model_validate(details[0])
    return AgentCheckpoint(session_id=req.session_id or str(uuid.uuid4()))


class AgentActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="run_agent")
    async def run_agent(self, req: AgentRequest) -> AgentResult:
        worktree = Path(req.workspace.path)
        if not worktree.is_dir():
            raise ApplicationError(f"worktree {worktree} is missing on this worker", type="WorkspaceMissing")
        checkpoint = load_checkpoint(req)
        # Before any host git: the worktree's git metadata is ticketflow's; verified again before each
        # commit, so git never runs on what the agent changed (GitTampered, non-retryable).
        guard = await git_guard.guard(worktree, req.workspace.branch)
        if await clear_stale_index_lock(worktree):
            activity.logger.warning("removed a stale index.lock left by a killed attempt in %s", worktree)
        if checkpoint.finished and checkpoint.last_commit == await head(worktree):
            # The previous attempt finished the agent but died before reporting; don't run it twice.
            return AgentResult(
                outcome="done",
                reason="recovered from checkpoint",
                steps=checkpoint.step,
                session_id=checkpoint.session_id,
                last_commit=checkpoint.last_commit,
            )
        result = await self._run(req, worktree, checkpoint, guard)
        return self._settle(result)

    async def _run(
        self, req: AgentRequest, worktree: Path, checkpoint: AgentCheckpoint, guard: git_guard.GitGuard
    ) -> AgentResult:
        name = req.ticket.agent or self.settings.default_agent
        try:
            agent = build_agent(name, self.settings)
        except AgentNotConfigured as exc:
            raise ApplicationError(str(exc), type="AgentNotConfigured", non_retryable=True) from exc
        info = activity.info()
        # One file per stage attempt: <activity id>-attempt<n>.log, e.g. run_agent-2-attempt1.log.
        log_path = self.settings.logs_dir / req.ticket.id / f"{info.activity_id}-attempt{info.attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        secrets = self.settings.secret_values()

        live = LiveOutput(info.workflow_id or "", secrets, self.settings.live_output_seconds)
        redact_line = LineRedactor(secrets)
        with log_path.open("a", encoding="utf-8") as log, _lease(self.settings, checkpoint) as renew_lease:

            def on_line(line: str) -> None:
                live.add(line)
                log.write(redact_line(line) + "\n")
                log.flush()
                activity.heartbeat(checkpoint.model_dump(mode="json"))

            async def on_step(description: str) -> None:
                checkpoint.step += 1
                await guard.verify()
                what = redact(description, secrets)[:120]  # checkpoint messages hold no secret either
                commit = await commit_all(
                    worktree, f"wip(ticketflow {req.ticket.id}): step {checkpoint.step}: {what}"
                )
                checkpoint.last_commit = commit or checkpoint.last_commit
                activity.heartbeat(checkpoint.model_dump(mode="json"))
                renew_lease()

            run_root = self.settings.state_dir / "runs" / req.ticket.id
            run_root.mkdir(parents=True, exist_ok=True)
            plan = self._sandbox_plan(name, worktree, run_root)
            run = AgentRun(
                request=req,
                worktree=worktree,
                run_dir=run_root / f"iter{req.iteration}",
                checkpoint=checkpoint,
                on_step=on_step,
                on_line=on_line,
                timeout_seconds=_process_timeout(),
                stall_seconds=self.settings.agent_stall_seconds,
                wrap=lambda argv: sandbox.wrap(argv, plan),
                log_path=log_path,
            )
            async with _heartbeating(checkpoint), live.sending():
                result = await agent.run(run)
        await guard.verify()
        final = await commit_all(
            worktree, f"wip(ticketflow {req.ticket.id}): iteration {req.iteration} result"
        )
        checkpoint.last_commit = final or checkpoint.last_commit or await head(worktree)
        checkpoint.finished = result.outcome == "done"
        activity.heartbeat(checkpoint.model_dump(mode="json"))
        return result.model_copy(
            update={
                "agent": name,
                "steps": checkpoint.step,
                "last_commit": checkpoint.last_commit,
                "session_id": result.session_id or checkpoint.session_id,
                "reason": redact(result.reason, secrets),
                "output_tail": redact_lines(result.output_tail[-20:], secrets),
            }
        )

    def _sandbox_plan(self, name: str, worktree: Path, run_root: Path) -> sandbox.SandboxPlan:
        """Only the worktree and this ticket's run directory (the agent's HOME) are writable."""
        return sandbox.config_plan(self.settings, name, worktree, [run_root])

    def _settle(self, result: AgentResult) -> AgentResult:
        """Failures become Temporal retries; long waits and humans go back to the workflow."""
        if result.outcome == "failed":
            raise ApplicationError(result.reason or "agent failed", type="AgentFailed")
        if result.outcome == "rate_limited":
            delay = result.retry_after_seconds
            if delay is None and result.reset_at is not None:
                delay = (result.reset_at - datetime.now(UTC)).total_seconds()
            if delay is None or delay <= SHORT_RATE_LIMIT_SECONDS:
                raise ApplicationError(
                    f"agent rate limited: {result.reason}",
                    type="RateLimited",
                    next_retry_delay=timedelta(seconds=max(1.0, delay or 30.0)),
                    category=ApplicationErrorCategory.BENIGN,
                )
        return result


def _process_timeout() -> float:
    """Leave the process a margin inside the activity's own timeout, so we report instead of vanishing."""
    limit = activity.info().start_to_close_timeout
    seconds = limit.total_seconds() if limit else 6 * 3600
    return max(10.0, seconds - min(60.0, seconds * 0.1))


@contextlib.asynccontextmanager
async def _heartbeating(checkpoint: AgentCheckpoint) -> AsyncIterator[None]:
    """Heartbeat the current checkpoint even while the agent is quiet, until its stall limit."""

    async def beat() -> None:
        while True:
            activity.heartbeat(checkpoint.model_dump(mode="json"))
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------------------ orphaned attempts (leases)
#
# Temporal notices a dead worker only when run_agent's heartbeat timeout expires. A worker that starts on
# the same host can do better: every running attempt keeps a lease file (who runs it, its checkpoint); a
# lease whose process is gone belongs to a killed worker, and failing that attempt right away makes
# Temporal retry it now, from the checkpoint, instead of a heartbeat timeout later.


def _leases_dir(settings: Settings) -> Path:
    return settings.state_dir / "leases"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of pid: tells a live process from a new one that reused its number."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def _lease(settings: Settings, checkpoint: AgentCheckpoint) -> Iterator[Callable[[], None]]:
    info = activity.info()
    path = _leases_dir(settings) / f"{info.workflow_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()

    def write() -> None:
        lease = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity_id": info.activity_id,
            "attempt": info.attempt,
            "host_id": settings.host_id,
            "pid": pid,
            "pid_start": _process_start(pid),
            "checkpoint": checkpoint.model_dump(mode="json"),
        }
        path.with_suffix(".tmp").write_text(json.dumps(lease))
        path.with_suffix(".tmp").replace(path)

    write()
    try:
        yield write
    finally:
        path.unlink(missing_ok=True)


async def reclaim_orphaned_agents(client: Client, settings: Settings) -> int:
    """Fail the run_agent attempts of a dead worker on this host so they retry now; returns how many.

    Call it before this worker starts polling: then no live attempt can be mistaken for an orphan.
    """
    reclaimed = 0
    for path in sorted(_leases_dir(settings).glob("*.json")):
        try:
            lease = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        pid = int(lease.get("pid", 0))
        if lease.get("host_id") != settings.host_id or (
            pid and _process_start(pid) == lease.get("pid_start")
        ):
            continue
        checkpoint = lease.get("checkpoint") or {}
        handle = client.get_async_activity_handle(
            workflow_id=lease["workflow_id"], run_id=lease["run_id"], activity_id=lease["activity_id"]
        )
        error = ApplicationError(
            f"the worker running this agent died (pid {pid}); resuming from step {checkpoint.get('step', 0)}",
            type="WorkerLost",
        )
        try:
            await handle.fail(error, last_heartbeat_details=[checkpoint])
            reclaimed += 1
            log.warning(
                "reclaimed %s %s from dead worker pid %s", lease["workflow_id"], lease["activity_id"], pid
            )
        except RPCError as exc:  # already timed out, retried or finished: nothing to do
            log.info("lease %s needs no reclaim: %s", path.name, exc)
        path.unlink(missing_ok=True)
    return reclaimed

"""Crash recovery: SIGKILL the worker while an agent runs, restart it, and measure what it costs.

    python -m bench.recovery [--no-reclaim]

One ticket runs a stepping agent (this file, `agent` mode: N steps, each announced as a checkpoint). The
worker (a real `ticketflow worker` subprocess) is killed with SIGKILL, process group and all, in the middle
of step 2, and a new worker is started at once. Measured: seconds from the restart to the agent running
again, and how many completed steps were redone (0 = it resumed from its checkpoint). Baseline, same run:
a fresh ticket's submit -> agent start on the warm worker. Left alone, Temporal hands the lost attempt
to the new worker only after run_agent's heartbeat timeout (target: <= heartbeat timeout + 3 s); the
restarted worker first fails the dead worker's attempts (reclaim_orphaned_agents), so they retry after
the policy's first retry interval instead. `--no-reclaim` measures the plain path. Last line: one JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.settings import Settings

STEPS_LOG = "steps.log"


# ------------------------------------------------------------------------------- the stepping agent


def agent_main() -> int:
    """N steps of `step_seconds` each; every event goes to $HOME/steps.log (outside the worktree)."""
    steps = int(os.environ.get("RECOVERY_STEPS", "4"))
    seconds = float(os.environ.get("RECOVERY_STEP_SECONDS", "2.5"))
    done = int(os.environ.get("TICKETFLOW_RESUME_STEP", "0"))
    root = Path(os.environ["TICKETFLOW_WORKTREE"])
    log = Path(os.environ["HOME"]) / STEPS_LOG

    def record(line: str) -> None:
        with log.open("a") as handle:
            handle.write(line + "\n")

    record(f"attempt {time.time():.3f} resume {done}")
    for number in range(done + 1, steps + 1):
        record(f"start {number}")
        print(f"working on step {number}", flush=True)
        time.sleep(seconds)
        (root / f"step{number}.txt").write_text(f"step {number}\n")
        record(f"done {number}")
        print(f"::ticketflow step::step {number}", flush=True)
    return 0


# --------------------------------------------------------------------------- the worker under test


def worker_main(reclaim: bool) -> int:
    """`ticketflow worker`, after failing the attempts a dead worker on this host left behind.

    reclaim_orphaned_agents is what the worker itself should run before it starts polling (docs/agents.md);
    until workers/main.py calls it, this launcher does. Without it, Temporal retries the lost attempt only
    when run_agent's heartbeat timeout expires.
    """
    from activities.agent import reclaim_orphaned_agents
    from activities.settings import Settings
    from clients.cli import main
    from clients.connect import connect

    async def reclaim_first() -> None:
        settings = Settings()
        client = await connect(settings)
        print(
            f"reclaimed {await reclaim_orphaned_agents(client, settings)} orphaned agent attempt(s)",
            flush=True,
        )

    if reclaim:
        asyncio.run(reclaim_first())
    return main(["worker"])


@dataclass
class Rig:
    """A state dir, config and worker processes for one measurement against a running dev server."""

    root: Path
    temporal_address: str
    reclaim: bool = True
    steps: int = 4
    step_seconds: float = 2.5

    def __post_init__(self) -> None:
        from clients.example_repo import create_example_remote

        self.task_queue = f"recovery-{uuid.uuid4().hex[:10]}"
        self.state_dir = self.root / "state"
        self.remote = create_example_remote(self.root / "remotes" / "calc.git")
        self.config = self.root / "ticketflow.toml"
        agent = [sys.executable, str(Path(__file__).resolve()), "agent"]
        self.config.write_text(
            f'default_agent = "stepper"\n[repos.calc]\nurl = {json.dumps(str(self.remote))}\n'
            f"[agents.stepper]\ncommand = {json.dumps(agent)}\n"
            'pass_env = ["RECOVERY_STEPS", "RECOVERY_STEP_SECONDS"]\n'
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETFLOW_")}
        env.update(
            TICKETFLOW_CONFIG=str(self.config),
            TICKETFLOW_TEMPORAL_ADDRESS=self.temporal_address,
            TICKETFLOW_TASK_QUEUE=self.task_queue,
            TICKETFLOW_STATE_DIR=str(self.state_dir),
            TICKETFLOW_HOST_ID="recovery-host",
            TICKETFLOW_METRICS_ADDRESS="",  # no fixed ports: other workers may hold them
            TICKETFLOW_HEALTH_ADDRESS="",
            RECOVERY_STEPS=str(self.steps),
            RECOVERY_STEP_SECONDS=str(self.step_seconds),
            PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        )
        return env

    def settings(self) -> Settings:
        from activities.settings import Settings

        os.environ["TICKETFLOW_CONFIG"] = str(self.config)
        try:
            return Settings(
                temporal_address=self.temporal_address,
                task_queue=self.task_queue,
                state_dir=self.state_dir,
                host_id="recovery-host",
            )
        finally:
            del os.environ["TICKETFLOW_CONFIG"]

    def start_worker(self) -> float:
        argv = [sys.executable, "-m", "bench.recovery", "worker"]
        if not self.reclaim:
            argv.append("--no-reclaim")
        log = (self.root / f"worker{len(self.procs)}.log").open("wb")
        started = time.time()
        self.procs.append(
            subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        return started

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group: no graceful shutdown, no final heartbeat."""
        proc = self.procs[-1]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    def worker_logs(self, lines: int = 15) -> str:
        """The tail of each worker's log, for a failure message."""
        tails = []
        for path in sorted(self.root.glob("worker*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(tails)

    def steps_log(self, ticket_id: str) -> list[str]:
        path = self.state_dir / "runs" / ticket_id / "iter1" / "home" / STEPS_LOG
        return path.read_text().splitlines() if path.exists() else []

    async def wait_for_line(self, ticket_id: str, prefix: str, count: int = 1, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.steps_log(ticket_id) if line.startswith(prefix)]
            if len(lines) >= count:
                return time.time()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {prefix!r} #{count} in the agent's log: {self.steps_log(ticket_id)}")


@dataclass
class CrashResult:
    recovery_seconds: float
    steps_redone: int
    done_lines: list[str]
    attempts: list[str]
    state: str
    prs: int


async def crash_and_recover(rig: Rig, client: Client, ticket_id: str = "crash-1") -> CrashResult:
    """Submit, kill the worker mid-step-2, restart it, and wait for the ticket to finish."""
    from clients import tickets
    from clients.example_repo import examples_dir
    from clients.ticket_files import load_ticket_file

    settings = rig.settings()
    ticket = load_ticket_file(examples_dir() / "backlog" / "demo-4-readme.md", {"repo": "calc"})
    ticket = ticket.model_copy(update={"id": ticket_id, "repo": "calc", "agent": "stepper"})
    rig.start_worker()
    await tickets.submit(client, settings, ticket)
    await rig.wait_for_line(ticket_id, "done 1")
    # Past the heartbeat throttle (2 s), so step 1's checkpoint has reached the server; step 2 is half done.
    await rig.wait_for_line(ticket_id, "start 2")
    await asyncio.sleep(min(2.2, rig.step_seconds * 0.9))
    rig.kill_worker()
    restarted = rig.start_worker()
    resumed_at = await rig.wait_for_line(ticket_id, "attempt", count=2, timeout=300)
    handle = tickets.handle_for(client, ticket_id)
    result = await asyncio.wait_for(handle.result(), 120)
    state = str(getattr(result, "state", result))
    lines = rig.steps_log(ticket_id)
    done = [line for line in lines if line.startswith("done")]
    attempt_times = [float(line.split()[1]) for line in lines if line.startswith("attempt")]
    pulls = rig.remote / "ticketflow-pulls"
    return CrashResult(
        recovery_seconds=round(attempt_times[1] - restarted, 2) if len(attempt_times) > 1 else resumed_at,
        steps_redone=len(done) - len(set(done)),
        done_lines=done,
        attempts=[line for line in lines if line.startswith("attempt")],
        state=state.removeprefix("TicketState."),
        prs=len(list(pulls.glob("*.json"))) if pulls.is_dir() else 0,
    )


async def fresh_start_seconds(rig: Rig, client: Client, ticket_id: str = "fresh-1") -> float:
    """Baseline: submit -> agent start for a new ticket on the warm (already running) worker."""
    from clients import tickets
    from clients.example_repo import examples_dir
    from clients.ticket_files import load_ticket_file

    settings = rig.settings()
    ticket = load_ticket_file(examples_dir() / "backlog" / "demo-1-multiply.md", {"repo": "calc"})
    ticket = ticket.model_copy(update={"id": ticket_id, "repo": "calc", "agent": "stepper"})
    submitted = time.time()
    await tickets.submit(client, settings, ticket)
    started = await rig.wait_for_line(ticket_id, "attempt")
    return round(started - submitted, 2)


async def bench(reclaim: bool) -> dict[str, object]:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from clients.devserver import temporal_binary
    from workflows import policy
    from workflows.visibility import SEARCH_ATTRIBUTES

    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), env.client.service_client.config.target_host, reclaim)
        try:
            crash = await crash_and_recover(rig, env.client)
            baseline = await fresh_start_seconds(rig, env.client)
        finally:
            rig.stop()
            await env.shutdown()
    assert policy.RUN_AGENT.heartbeat is not None
    hb = policy.RUN_AGENT.heartbeat.total_seconds()
    retry = policy.RUN_AGENT.retry.initial_interval.total_seconds()
    print(f"steps completed: {crash.done_lines}; attempts: {crash.attempts}")
    print(f"ticket ended {crash.state} with {crash.prs} PR(s)")
    return {
        "restart_to_agent_running_seconds": crash.recovery_seconds,
        "reclaim_orphans_on_start": reclaim,
        "target_seconds": hb + 3,
        "heartbeat_timeout_seconds": hb,
        "retry_interval_seconds": retry,
        "steps_redone": crash.steps_redone,
        "baseline_fresh_ticket_to_agent_start_seconds": baseline,
        "ratio_recovery_to_baseline": round(crash.recovery_seconds / max(baseline, 0.01), 1),
        "final_state": crash.state,
        "prs": crash.prs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "agent", "worker"])
    parser.add_argument(
        "--no-reclaim", action="store_true", help="restart a plain worker: wait for the heartbeat timeout"
    )
    args = parser.parse_args()
    if args.mode == "agent":
        return agent_main()
    if args.mode == "worker":
        return worker_main(not args.no_reclaim)
    print(json.dumps(asyncio.run(bench(not args.no_reclaim))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

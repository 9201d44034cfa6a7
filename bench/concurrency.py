"""Concurrency: N tickets with a 2 s simulated agent at once, against one ticket and a sequential loop.

The real TicketWorkflow on a real worker (workers.main.build_workers) against the example repository:
the agent is a `command` agent that sleeps, edits one file and reports one step. `--stages real` runs
every stage for real (git worktree, WIP commit, the repo's unit tests, the review, a local PR);
`--stages agent` keeps the real worktree and agent but registers no-op classify/run_checks/review/open_pr
under the real names, so git and test costs on a small machine do not hide the orchestration. The
worker gets enough activity slots for all N agents (`--slots`; production's default is 8).

Figures: `ratio_vs_one` = wall time of N at once / wall time of one (target <= 1.3), `speedup_vs_sequential`
= sequential loop / N at once. Run: `.venv/bin/python -m bench.concurrency`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.agent import AgentActivities
from activities.settings import Settings
from activities.workspace import WorkspaceActivities
from bench.harness import (
    NoopActivities,
    dev_server,
    emit,
    machine,
    script_agent,
    start_ticket,
    worker_settings,
)
from clients.example_repo import create_example_remote
from workers.main import build_workers
from workflows import policy
from workflows.contracts import Ticket, TicketResult, TicketState, workflow_id_for
from workflows.ticket import TicketWorkflow

TARGET_RATIO = 1.3
AGENT = """\
import os, pathlib, time
time.sleep(float(os.environ.get("BENCH_AGENT_SECONDS", "{seconds}")))
root = pathlib.Path(os.environ["TICKETFLOW_WORKTREE"])
(root / "bench_note.txt").write_text("simulated agent was here\\n")
print("::ticketflow step::wrote bench_note.txt", flush=True)
"""


def agent_stage_workers(client: Client, settings: Settings) -> list[Worker]:
    """Real workspace and agent activities, no-op for the other stages, same two-queue shape."""
    noop, workspace = NoopActivities(settings.host_queue), WorkspaceActivities(settings)
    activities = [
        noop.classify,
        noop.run_checks,
        noop.review,
        noop.open_pr,
        workspace.prepare_workspace,
        workspace.release_workspace,
        AgentActivities(settings).run_agent,
    ]
    common: dict[str, Any] = {
        "activities": activities,
        "max_concurrent_activities": settings.max_concurrent_activities,
        "graceful_shutdown_timeout": policy.GRACEFUL_SHUTDOWN,
        "max_heartbeat_throttle_interval": policy.HEARTBEAT_THROTTLE,
    }
    shared = Worker(client, task_queue=settings.task_queue, workflows=[TicketWorkflow], **common)
    llm = Worker(client, task_queue=policy.llm_queue(settings.task_queue), **common)  # classify
    return [shared, Worker(client, task_queue=settings.host_queue, **common), llm]


def bench_ticket(prefix: str) -> Ticket:
    return Ticket(
        id=f"{prefix}-{uuid.uuid4().hex[:10]}",
        title="Concurrency benchmark ticket",
        body="Write bench_note.txt (a simulated two-second agent).",
        repo="calc",
    )


async def run_tickets(client: Client, settings: Settings, count: int) -> tuple[float, dict[str, float]]:
    """Start `count` tickets at once; seconds until every one is DONE, and mean seconds per stage."""
    tickets = [bench_ticket("conc") for _ in range(count)]
    started = time.perf_counter()
    await asyncio.gather(*(start_ticket(client, settings, t) for t in tickets))
    results = await asyncio.gather(
        *(
            client.get_workflow_handle(workflow_id_for(t.id), result_type=TicketResult).result()
            for t in tickets
        )
    )
    elapsed = time.perf_counter() - started
    bad = [r.state.value for r in results if r.state is not TicketState.DONE]
    if bad:
        raise RuntimeError(f"{len(bad)} ticket(s) did not end DONE: {bad}")
    stages = {name for r in results for name in r.status.timings}
    means = {s: round(sum(r.status.timings.get(s, 0.0) for r in results) / count, 2) for s in sorted(stages)}
    return elapsed, means


@contextlib.asynccontextmanager
async def running(workers: Sequence[Worker]) -> Any:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(count: int, stages: str, agent_seconds: float, slots: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as scratch:
        root = Path(scratch)
        remote = create_example_remote(root / "remotes" / "calc.git")
        agent = script_agent(root / "agents", "sleepy", AGENT.format(seconds=agent_seconds))
        async with dev_server() as env:
            settings = worker_settings(
                env.client, root / "state", remote, agent, max_concurrent_activities=slots
            )
            builder = build_workers if stages == "real" else agent_stage_workers
            async with running(builder(env.client, settings)):
                await run_tickets(env.client, settings, 1)  # warm-up: sandbox imports, mirror clone
                one, one_stages = await run_tickets(env.client, settings, 1)
                print(f"one ticket: {one:.2f}s", flush=True)
                together, together_stages = await run_tickets(env.client, settings, count)
                print(f"{count} at once: {together:.2f}s", flush=True)
                sequential = 0.0
                for _ in range(count):
                    sequential += (await run_tickets(env.client, settings, 1))[0]
                print(f"{count} one after another: {sequential:.2f}s", flush=True)
    ratio = together / one
    return {
        "benchmark": "concurrency",
        "tickets": count,
        "stages": stages,
        "stages_note": (
            "every stage real (git worktree, WIP commit, unit tests, review, local PR)"
            if stages == "real"
            else "real worktree and agent; no-op classify, run_checks, review, open_pr"
        ),
        "agent_seconds": agent_seconds,
        "activity_slots": slots,
        "one_s": round(one, 2),
        "concurrent_s": round(together, 2),
        "sequential_s": round(sequential, 2),
        "stage_s_one": one_stages,
        "stage_s_concurrent_mean": together_stages,
        "ratio_vs_one": round(ratio, 3),
        "speedup_vs_sequential": round(sequential / together, 2),
        "target": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "machine": machine(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=16, help="tickets started at once")
    parser.add_argument("--stages", choices=["real", "agent"], default="real")
    parser.add_argument("--agent-seconds", type=float, default=2.0)
    parser.add_argument("--slots", type=int, default=0, help="activity slots; default: 2 x count")
    args = parser.parse_args(argv)
    slots = args.slots or 2 * args.count
    emit(asyncio.run(run(args.count, args.stages, args.agent_seconds, slots)))


if __name__ == "__main__":
    main()

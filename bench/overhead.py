"""Orchestration overhead: TicketWorkflow with no-op activities against a bare six-activity workflow.

Both sides run on one dev server in one run, through the client and worker configuration a real worker
has (clients/connect.py's converter and tracing interceptor, workers/main.py's metrics interceptor and
concurrency limits), with the same no-op activities registered under ticketflow's activity names. So
the ratio isolates what TicketWorkflow adds on top of Temporal: status bookkeeping, search-attribute
upserts, current details, activity options, a bigger module for the sandbox to import per ticket.

Throughput is completed workflows per second for `--count` workflows started at once. Each round
measures both sides back to back (alternating which goes first); the ratio is the median of the
rounds' ratios. The last line printed is one JSON object.

Run from the repository root: `.venv/bin/python -m bench.overhead`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

# The sandbox re-imports this module for every bare workflow run; passing the project's modules through
# keeps that re-import as cheap as the one TicketWorkflow's module gets.
with workflow.unsafe.imports_passed_through():
    from activities.settings import Settings
    from bench.harness import NoopActivities, dev_server, emit, machine, start_run
    from clients.connect import connect
    from workers.metrics import MetricsInterceptor
    from workers.tracing import setup_tracing
    from workflows import policy
    from workflows.contracts import (
        AgentRequest,
        ChecksRequest,
        ClassifyRequest,
        PullRequestRequest,
        ReleaseRequest,
        ReviewRequest,
        Ticket,
        TicketRun,
        TicketState,
        WorkspaceRequest,
    )
    from workflows.ticket import TicketWorkflow

TARGET_RATIO = 0.8
BARE_TIMEOUT = timedelta(minutes=1)


@workflow.defn(name="BenchBareWorkflow")
class BareWorkflow:
    """The baseline: the same seven activities with the same payload types, in sequence, nothing else."""

    @workflow.run
    async def run(self, ticket: Ticket) -> str:
        classification = await workflow.execute_activity_method(
            NoopActivities.classify, ClassifyRequest(ticket=ticket), start_to_close_timeout=BARE_TIMEOUT
        )
        workspace = await workflow.execute_activity_method(
            NoopActivities.prepare_workspace,
            WorkspaceRequest(ticket=ticket),
            start_to_close_timeout=BARE_TIMEOUT,
        )
        await workflow.execute_activity_method(
            NoopActivities.run_agent,
            AgentRequest(ticket=ticket, workspace=workspace, classification=classification),
            start_to_close_timeout=BARE_TIMEOUT,
        )
        await workflow.execute_activity_method(
            NoopActivities.run_checks, ChecksRequest(workspace=workspace), start_to_close_timeout=BARE_TIMEOUT
        )
        await workflow.execute_activity_method(
            NoopActivities.review,
            ReviewRequest(ticket=ticket, workspace=workspace, classification=classification),
            start_to_close_timeout=BARE_TIMEOUT,
        )
        ref = await workflow.execute_activity_method(
            NoopActivities.open_pr,
            PullRequestRequest(ticket=ticket, workspace=workspace, classification=classification),
            start_to_close_timeout=BARE_TIMEOUT,
        )
        await workflow.execute_activity_method(
            NoopActivities.release_workspace,
            ReleaseRequest(ticket_id=ticket.id, workspace=workspace, state=TicketState.DONE),
            start_to_close_timeout=BARE_TIMEOUT,
        )
        return ref.url


# ------------------------------------------------------------------------------------------ sides


def _ticket() -> Ticket:
    return Ticket(
        id=f"bench-{uuid.uuid4().hex[:16]}",
        title="Overhead benchmark ticket",
        body="A no-op ticket: every activity returns at once.",
        repo="bench",
    )


@dataclass
class Side:
    name: str
    task_queue: str
    run_one: Callable[[Client], Awaitable[None]]


def pipeline_side(task_queue: str) -> Side:
    async def run_one(client: Client) -> None:
        ticket = _ticket()
        handle = await start_run(client, TicketRun(ticket=ticket), task_queue)
        result = await handle.result()
        if result.state is not TicketState.DONE:
            raise RuntimeError(f"pipeline ticket {ticket.id} ended {result.state.value}, not DONE")

    return Side("pipeline", task_queue, run_one)


def bare_side(task_queue: str) -> Side:
    async def run_one(client: Client) -> None:
        ticket = _ticket()
        handle: WorkflowHandle[BareWorkflow, str] = await client.start_workflow(
            BareWorkflow.run, ticket, id=f"bare-{ticket.id}", task_queue=task_queue
        )
        await handle.result()

    return Side("bare", task_queue, run_one)


def worker_for(client: Client, side: Side, workflow_class: type) -> Worker:
    """The production worker settings (workers/main.py with default Settings), for either side."""
    fields = Settings.model_fields
    return Worker(
        client,
        task_queue=side.task_queue,
        workflows=[workflow_class],
        activities=NoopActivities(side.task_queue).all(),
        interceptors=[MetricsInterceptor()],
        max_concurrent_activities=fields["max_concurrent_activities"].default,
        max_concurrent_workflow_tasks=fields["max_concurrent_workflow_tasks"].default,
        graceful_shutdown_timeout=policy.GRACEFUL_SHUTDOWN,
        max_heartbeat_throttle_interval=policy.HEARTBEAT_THROTTLE,
    )


def llm_worker_for(client: Client, side: Side) -> Worker:
    """TicketWorkflow sends classify to the LLM queue, which a production worker serves too."""
    return Worker(
        client,
        task_queue=policy.llm_queue(side.task_queue),
        activities=NoopActivities(side.task_queue).all(),
        interceptors=[MetricsInterceptor()],
        max_concurrent_activities=Settings.model_fields["max_concurrent_llm_activities"].default,
        graceful_shutdown_timeout=policy.GRACEFUL_SHUTDOWN,
    )


# ------------------------------------------------------------------------------------ measuring


async def throughput(client: Client, side: Side, count: int) -> float:
    """Completed workflows per second, for `count` workflows started at the same moment."""
    started = time.perf_counter()
    await asyncio.gather(*(side.run_one(client) for _ in range(count)))
    return count / (time.perf_counter() - started)


async def measure(
    client: Client, sides: Sequence[Side], count: int, rounds: int, warmup: int
) -> dict[str, list[float]]:
    for side in sides:
        # The first workflows of a queue pay for sandbox imports and poller start-up; keep them out.
        await throughput(client, side, warmup)
    results: dict[str, list[float]] = {side.name: [] for side in sides}
    for number in range(1, rounds + 1):
        # Alternate which side goes first, so drift of the machine over the run hits both alike.
        order = sides if number % 2 else list(reversed(sides))
        for side in order:
            results[side.name].append(await throughput(client, side, count))
        pipeline, bare = results["pipeline"][-1], results["bare"][-1]
        print(
            f"round {number}/{rounds}: pipeline {pipeline:.1f}/s, bare {bare:.1f}/s, "
            f"ratio {pipeline / bare:.3f} (load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return results


def workflow_bytecode_cached() -> bool:
    """Whether the sandbox loads TicketWorkflow's module from a .pyc or compiles its source anew.

    The sandbox imports the workflow's module afresh for every ticket; with PYTHONDONTWRITEBYTECODE and
    no __pycache__ (an editable install) each ticket pays for compiling it, which moves the ratio.
    """
    source = inspect.getsourcefile(TicketWorkflow)
    return source is not None and Path(importlib.util.cache_from_source(source)).exists()


def report(count: int, results: dict[str, list[float]]) -> dict[str, Any]:
    pipeline, bare = statistics.median(results["pipeline"]), statistics.median(results["bare"])
    # Each round measures both sides back to back, so its ratio is the one least moved by whatever else
    # the machine does; the median of those is the figure (it may differ a little from the medians' ratio).
    ratio = statistics.median(p / b for p, b in zip(results["pipeline"], results["bare"], strict=True))
    return {
        "benchmark": "overhead",
        "count": count,
        "pipeline_per_s": round(pipeline, 2),
        "bare_per_s": round(bare, 2),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "rounds": {name: [round(value, 2) for value in values] for name, values in results.items()},
        "workflow_bytecode_cached": workflow_bytecode_cached(),
        # Other processes share the cores; the 1-minute load says how much they took.
        "machine": {**machine(), "load_1m": round(os.getloadavg()[0], 2)},
    }


async def run(count: int, rounds: int, warmup: int) -> dict[str, Any]:
    async with dev_server() as env:
        # The client a worker gets (clients/connect.py: converter and tracing interceptor, which the
        # workers inherit), with the tracer provider the worker installs.
        setup_tracing("ticketflow-bench")
        client = await connect(Settings(temporal_address=env.client.service_client.config.target_host))
        suffix = uuid.uuid4().hex[:8]
        pipeline, bare = pipeline_side(f"bench-pipeline-{suffix}"), bare_side(f"bench-bare-{suffix}")
        async with (
            worker_for(client, pipeline, TicketWorkflow),
            llm_worker_for(client, pipeline),
            worker_for(client, bare, BareWorkflow),
        ):
            results = await measure(client, [pipeline, bare], count, rounds, warmup)
    return report(count, results)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200, help="workflows started at once per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per side; the median counts")
    parser.add_argument("--warmup", type=int, default=20, help="workflows per side before measuring")
    args = parser.parse_args(argv)
    emit(asyncio.run(run(args.count, args.rounds, args.warmup)))


if __name__ == "__main__":
    main()

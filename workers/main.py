"""The ticketflow worker: runs TicketWorkflow and the activities, and shuts down gracefully.

By default one process serves three task queues: the shared queue (workflows and workspace-free
activities), its own host queue, where the activities that need the ticket's worktree on this disk
are sent, and the LLM queue (model calls without a worktree, with slots of their own). The
`capabilities` setting splits them between processes ("git": the first two; "llm": the third).
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

import workflows
from activities import build_activities, build_llm_activities
from activities.agent import reclaim_orphaned_agents
from activities.agents import sandbox
from activities.notify import NotifyActivities
from activities.settings import Settings
from clients.config_check import effective_config
from clients.connect import describe_connection, ensure_search_attributes
from workers.health import HealthServer, Readiness
from workers.metrics import MetricsInterceptor
from workflows import policy
from workflows.intake import IntakeWorkflow
from workflows.limit_gate import LimitGateWorkflow
from workflows.ticket import TicketWorkflow

log = logging.getLogger("ticketflow.worker")


def precompile_workflows() -> None:
    """The sandbox re-imports the workflow modules for every workflow run; without cached bytecode
    (editable installs, PYTHONDONTWRITEBYTECODE) each ticket would compile them again."""
    with contextlib.suppress(OSError):
        compileall.compile_dir(Path(workflows.__file__).parent, quiet=1)


def build_workers(client: Client, settings: Settings) -> list[Worker]:
    """The Temporal workers of this process, by settings.capabilities."""
    common = {
        "interceptors": [MetricsInterceptor()],
        "graceful_shutdown_timeout": policy.GRACEFUL_SHUTDOWN,
        "max_heartbeat_throttle_interval": policy.HEARTBEAT_THROTTLE,
    }
    workers = []
    if "git" in settings.capabilities:
        precompile_workflows()
        # Every activity on both queues: classify too, for tickets started before it moved to the LLM queue.
        git = {
            **common,
            "activities": [*build_activities(settings), NotifyActivities(settings).notify],
            "max_concurrent_activities": settings.max_concurrent_activities,
        }
        shared = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[TicketWorkflow, IntakeWorkflow, LimitGateWorkflow],
            max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
            **git,  # type: ignore[arg-type]
        )
        workers += [shared, Worker(client, task_queue=settings.host_queue, **git)]  # type: ignore[arg-type]
    if "llm" in settings.capabilities:
        llm = Worker(
            client,
            task_queue=policy.llm_queue(settings.task_queue),
            activities=build_llm_activities(settings),
            max_concurrent_activities=settings.max_concurrent_llm_activities,
            **common,  # type: ignore[arg-type]
        )
        workers.append(llm)
    return workers


async def run_workers(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then let running activities finish within the graceful timeout."""
    # What `ticketflow config check` prints, as one line: the worker's effective configuration, every
    # secret masked (SecretStr), so a deployment's real settings are in its log.
    log.info("effective configuration: %s", json.dumps(effective_config(settings), sort_keys=True))
    log.info("connected to Temporal: %s", describe_connection(settings))
    await ensure_search_attributes(client, register=settings.register_search_attributes)
    # Before polling: a dead worker's agent attempts retry now (from their checkpoints), not after
    # their heartbeat timeout; no live attempt of this worker can be mistaken for an orphan yet.
    reclaimed = await reclaim_orphaned_agents(client, settings) if "git" in settings.capabilities else 0
    if "git" in settings.capabilities:
        # Network namespaces and cgroups of sandbox launchers that were SIGKILLed with a dead worker.
        await asyncio.to_thread(sandbox.sweep_leftovers)
    if reclaimed:
        log.warning("failed %d agent attempt(s) of a dead worker so they retry now", reclaimed)
    workers = build_workers(client, settings)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    readiness = Readiness(connected=True, polling=lambda: all(w.is_running for w in workers))
    health = await start_health(client, settings, readiness)
    log.info("worker polling %s", ", ".join(w.task_queue for w in workers))
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    readiness.reason = "shutting down"
    await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
    if health is not None:
        await health.stop()
    for task in tasks:
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def running_workers(client: Client, settings: Settings) -> AsyncIterator[None]:
    """`ticketflow worker` inside this process for the duration of the block (tests, benchmarks)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_workers(client, settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, policy.GRACEFUL_SHUTDOWN.total_seconds() * 2)


async def start_health(client: Client, settings: Settings, readiness: Readiness) -> HealthServer | None:
    """/healthz, /readyz and the tickets-by-state gauge; a taken port is a warning, not a crash."""
    if not settings.health_address:
        return None
    host, _, port = settings.health_address.rpartition(":")
    server = HealthServer(client, settings.task_queue, readiness, settings.health_refresh_seconds)
    try:
        await server.start(host or "127.0.0.1", int(port))
    except OSError as exc:
        log.warning("health endpoint %s unavailable: %s", settings.health_address, exc)
        return None
    return server


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

"""The ticketflow worker: runs TicketWorkflow and the activities, and shuts down gracefully.

One process serves two task queues: the shared queue (workflows and workspace-free activities) and its
own host queue, where the activities that need the ticket's worktree on this disk are sent.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from temporalio.client import Client
from temporalio.worker import Worker

from activities import build_activities
from activities.settings import Settings
from clients.connect import ensure_search_attributes
from workflows import policy
from workflows.ticket import TicketWorkflow

log = logging.getLogger("ticketflow.worker")


def build_workers(client: Client, settings: Settings) -> list[Worker]:
    activities = build_activities(settings)
    common = {
        "activities": activities,
        "max_concurrent_activities": settings.max_concurrent_activities,
        "graceful_shutdown_timeout": policy.GRACEFUL_SHUTDOWN,
        "max_heartbeat_throttle_interval": policy.HEARTBEAT_THROTTLE,
    }
    shared = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[TicketWorkflow],
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        **common,  # type: ignore[arg-type]
    )
    own_host = Worker(client, task_queue=settings.host_queue, **common)  # type: ignore[arg-type]
    return [shared, own_host]


async def run_workers(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then let running activities finish within the graceful timeout."""
    await ensure_search_attributes(client)
    workers = build_workers(client, settings)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    log.info("worker polling %s and %s", settings.task_queue, settings.host_queue)
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
    for task in tasks:
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

"""Worker processes by capability: model calls on the LLM queue with slots of their own."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.settings import Capability, Settings
from clients import tickets
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from workers.main import running_workers
from workflows import policy
from workflows.contracts import TicketState


def running(
    client: Client, settings: Settings, *capabilities: Capability
) -> AbstractAsyncContextManager[None]:
    """`ticketflow worker` with these capabilities, in this process."""
    own = settings.model_copy(update={"capabilities": list(capabilities), "health_address": ""})
    return running_workers(client, own)


async def scheduled_queues(client: Client, ticket_id: str) -> dict[str, str]:
    """Activity name -> the task queue its (last) attempt was scheduled on."""
    history = await tickets.handle_for(client, ticket_id).fetch_history()
    queues = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            queues[attributes.activity_type.name] = attributes.task_queue.name
    return queues


async def test_classify_runs_on_the_llm_queue(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-1-multiply.md", id="llm-queue-1")
    await submit(client, worker, ticket)
    assert (await result_of(client, ticket.id)).state is TicketState.DONE
    queues = await scheduled_queues(client, ticket.id)
    assert queues["classify"] == policy.llm_queue(worker.task_queue)
    assert queues["prepare_workspace"] == worker.task_queue
    assert queues["run_agent"] == worker.host_queue


async def test_git_and_llm_workers_can_run_apart(client: Client, settings: Settings) -> None:
    ticket = example_ticket("demo-1-multiply.md", id="llm-queue-2")
    async with running(client, settings, "git"):
        await submit(client, settings, ticket)
        # No worker serves the LLM queue yet: the ticket waits, visibly, at classify.
        waiting = await wait_for_status(client, ticket.id, in_state(TicketState.CLASSIFYING))
        assert waiting.classification is None
        async with running(client, settings, "llm"):
            result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE

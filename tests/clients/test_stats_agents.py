"""`ticketflow stats` by agent counts the agent each ticket's run_agent attempts recorded, not the
default_agent of whoever runs `stats`."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from activities.settings import Settings
from clients import stats
from tests.helpers import example_ticket, result_of, submit
from workflows.contracts import TicketState


async def test_stats_count_the_agent_that_ran(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-1-multiply.md", id=f"stats-{uuid.uuid4().hex[:8]}")
    assert ticket.agent is None and worker.default_agent == "demo"  # the worker chose the agent
    await submit(client, worker, ticket)
    assert (await result_of(client, ticket.id)).state is TicketState.DONE

    handle = client.get_workflow_handle(f"ticket-{ticket.id}")
    assert await stats.agents_that_ran(client, await handle.fetch_history()) == ["demo"]
    result = await stats.collect(client, "1h", task_queue=worker.task_queue)
    (outcome,) = [o for o in result.outcomes if o.ticket_id == ticket.id]
    assert outcome.agent == "demo"
    assert "demo" in result.by_agent and "command" not in result.by_agent

"""The LimitGate workflow on the real dev server: tickets learn a provider's limit from one call, wait
until the reset without calling, and one probe goes first after it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from activities.llm.gate_signal import limit_gate_signal
from activities.settings import Settings
from bench.limit_storm import StormTicket, StormTicketWorkflow, storm_call
from tests.fakes.ollama_server import FakeOllama, Fault
from workflows import policy
from workflows.contracts import GateStatus
from workflows.limit_gate import LimitGateWorkflow


@pytest_asyncio.fixture(loop_scope="session")
async def gate_queue(client: Client, settings: Settings) -> AsyncIterator[str]:
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[StormTicketWorkflow, LimitGateWorkflow],  # the gate runs in the sandbox
        activities=[storm_call, limit_gate_signal],
    )
    async with worker:
        yield settings.task_queue


async def run_tickets(client: Client, queue: str, fake: FakeOllama, provider: str, count: int) -> list[int]:
    handles = [
        await client.start_workflow(
            StormTicketWorkflow.run,
            StormTicket(url=fake.url, provider=provider, ticket=f"t{i}", gated=True),
            id=f"gated-{provider}-{i}",
            task_queue=queue,
        )
        for i in range(count)
    ]
    return list(await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 40))


async def gate_status(client: Client, provider: str, queue: str) -> GateStatus:
    handle = client.get_workflow_handle(policy.limit_gate_id(provider, queue))
    status: GateStatus = await handle.query(LimitGateWorkflow.status)
    return status


async def test_one_refused_call_then_everyone_waits_for_the_reset(
    client: Client, gate_queue: str, fake_ollama: FakeOllama
) -> None:
    provider = f"p-{uuid.uuid4().hex[:6]}"
    # The first call hits a usage limit lasting 2 s from that moment (however slow the start-up).
    fake_ollama.script("small:latest", Fault("usage_limit", seconds=2.0))
    attempts = await run_tickets(client, gate_queue, fake_ollama, provider, 6)
    assert fake_ollama.calls_while_limited == 0  # after the first refused call nobody called until the reset
    assert sorted(attempts) == [1] * 5 + [2]
    status = await gate_status(client, provider, gate_queue)
    assert (status.state, status.waiting, status.limits_reported) == ("open", [], 1)
    assert status.probes == 2  # the gate's first call, and the one after the reset


async def test_an_open_gate_lets_everyone_through(
    client: Client, gate_queue: str, fake_ollama: FakeOllama
) -> None:
    provider = f"p-{uuid.uuid4().hex[:6]}"
    assert await run_tickets(client, gate_queue, fake_ollama, provider, 4) == [1, 1, 1, 1]
    assert len(fake_ollama.chats()) == 4
    status = await gate_status(client, provider, gate_queue)
    assert (status.state, status.probes, status.limits_reported) == ("open", 1, 0)


async def test_a_carried_limit_is_honoured_after_continue_as_new(
    client: Client, gate_queue: str, fake_ollama: FakeOllama
) -> None:
    """A gate started with the status a previous run carried keeps every ticket back until the reset."""
    provider = f"p-{uuid.uuid4().hex[:6]}"
    reset = datetime.fromtimestamp(fake_ollama.limit_for(3.0), UTC)
    carried = GateStatus(provider=provider, state="limited", limited_until=reset, runs=2)
    await client.start_workflow(
        LimitGateWorkflow.run,
        carried,
        id=policy.limit_gate_id(provider, gate_queue),
        task_queue=gate_queue,
        execution_timeout=timedelta(minutes=2),
    )
    assert await run_tickets(client, gate_queue, fake_ollama, provider, 3) == [1, 1, 1]
    assert fake_ollama.calls_while_limited == 0
    status = await gate_status(client, provider, gate_queue)
    assert (status.state, status.runs, status.probes) == ("open", 2, 1)
    for i in range(3):  # held back past GATE_NOTICE: each ticket was told, to show WAITING_FOR_LIMIT
        assert await client.get_workflow_handle(f"gated-{provider}-{i}").query(StormTicketWorkflow.waited)

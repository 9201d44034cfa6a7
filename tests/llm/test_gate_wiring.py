"""TicketWorkflow behind the limit gate: tickets on a limited provider wait at the gate, one probes."""

from __future__ import annotations

import asyncio
import json

from temporalio.client import Client

from activities.settings import Settings
from tests.fakes.ollama_server import FakeOllama, Fault, Reply
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.llm.llm_helpers import with_models
from workflows import policy
from workflows.contracts import TicketState
from workflows.limit_gate import LimitGateWorkflow

GOOD = json.dumps({"kind": "feature", "complexity": "low", "risk": "low", "rationale": "small"})


async def test_tickets_wait_at_the_gate_and_resume_after_the_reset(
    client: Client, worker: Settings, fake_ollama: FakeOllama
) -> None:
    worker.models = with_models(worker, {"gated": fake_ollama.url}, classify=["small:latest"]).models
    fake_ollama.script("small:latest", Fault("usage_limit", seconds=5))
    fake_ollama.responder = lambda body: Reply(content=GOOD)
    first = example_ticket("demo-1-multiply.md", id="gate-1")
    await submit(client, worker, first)
    await wait_for_status(client, first.id, in_state(TicketState.WAITING_FOR_LIMIT), timeout=20)
    second = example_ticket("demo-2-divide-by-zero.md", id="gate-2")
    await submit(client, worker, second)
    held = await wait_for_status(client, second.id, in_state(TicketState.WAITING_FOR_LIMIT), timeout=20)
    assert "limit gate of gated" in held.events[-1].note
    results = await asyncio.gather(result_of(client, first.id), result_of(client, second.id))
    assert [r.state for r in results] == [TicketState.DONE, TicketState.DONE]
    assert fake_ollama.calls_while_limited == 0  # only the first, refused call reached the provider
    assert len(fake_ollama.chats()) == 3
    gate = client.get_workflow_handle(policy.limit_gate_id("gated", worker.task_queue))
    status = await gate.query(LimitGateWorkflow.status)
    assert (status.state, status.limits_reported) == ("open", 1)

"""A model server that stays down through a stage's retries: the ticket waits visibly, then resumes."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from temporalio.client import Client

from activities.settings import Settings
from tests.fakes.ollama_server import FakeOllama, Reply, refused_url, serve
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.llm.llm_helpers import with_models
from workflows.contracts import TicketState

GOOD = json.dumps({"kind": "feature", "complexity": "low", "risk": "low", "rationale": "small"})


def down_ollama(worker: Settings) -> str:
    url = refused_url()
    worker.models = with_models(worker, {"local": url}, classify=["small:latest"]).models
    worker.model_down_first_wait_seconds = 1
    return url


async def test_a_down_ollama_leaves_the_ticket_waiting_until_back(client: Client, worker: Settings) -> None:
    url = down_ollama(worker)
    ticket = example_ticket("demo-1-multiply.md", id="model-down-1")
    await submit(client, worker, ticket)
    waiting = await wait_for_status(client, ticket.id, in_state(TicketState.WAITING_FOR_MODEL), timeout=60)
    assert waiting.stage is not None and waiting.stage.value == "classify"
    assert waiting.waiting_until is not None
    assert "no model answered" in waiting.events[-1].note and "unreachable" in waiting.events[-1].note
    fake = FakeOllama(models={"small:latest"}, responder=lambda body: Reply(content=GOOD))
    with serve(fake, port=urlsplit(url).port or 0):
        result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert "local/small:latest" in result.status.models_used
    assert len(fake.chats()) == 1  # the one classify call, once the server was up


async def test_a_server_down_for_too_long_asks_a_human(client: Client, worker: Settings) -> None:
    down_ollama(worker)
    worker.model_down_max_wait_seconds = 5
    ticket = example_ticket("demo-1-multiply.md", id="model-down-2")
    await submit(client, worker, ticket)
    blocked = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED), timeout=90)
    assert blocked.blocked_reason is not None
    assert blocked.blocked_reason.startswith("classify failed (retries exhausted)")
    waits = [e for e in blocked.events if e.state is TicketState.WAITING_FOR_MODEL]
    assert len(waits) >= 2  # it did try again on its own before giving up

"""A whole ticket whose classify and review stages use model chains (our fake Ollama), the demo agent
coding: each stage records the model that served it and its tokens."""

from __future__ import annotations

import json
from typing import Any

from temporalio.client import Client

from activities.settings import Settings
from tests.fakes.ollama_server import FakeOllama, Reply
from tests.helpers import example_ticket, result_of, submit
from tests.llm.llm_helpers import with_models
from workflows.contracts import TicketState


def structured_replies(body: dict[str, Any]) -> Reply:
    """Answer whichever schema the stage sent in `format`."""
    properties = body.get("format", {}).get("properties", {})
    if "findings" in properties:
        finding = {"severity": "low", "message": "consider a docstring for multiply", "file": "calc.py"}
        return Reply(content=json.dumps({"findings": [finding], "summary": "fine"}), prompt_tokens=800)
    answer = {"kind": "feature", "complexity": "low", "risk": "low", "rationale": "one small function"}
    return Reply(content=json.dumps(answer), prompt_tokens=150, completion_tokens=40)


async def test_classify_and_review_use_their_chains(
    client: Client, worker: Settings, fake_ollama: FakeOllama
) -> None:
    worker.models = with_models(
        worker, {"local": fake_ollama.url}, classify=["small:latest"], review=["not-pulled:70b", "big:latest"]
    ).models
    fake_ollama.responder = structured_replies
    ticket = example_ticket("demo-1-multiply.md", id="models-1")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    status = result.status
    assert status.classification is not None and status.classification.model == "local/small:latest"
    assert status.last_review is not None and status.last_review.model == "local/big:latest"
    assert any(f.rule == "model-review" and f.file == "calc.py" for f in status.last_review.findings)
    assert {"local/small:latest", "local/big:latest"} <= set(status.models_used)
    assert status.tokens.prompt >= 950
    review_prompt = fake_ollama.chats("big:latest")[0].body["messages"][-1]["content"]
    assert "def multiply" in review_prompt  # the model reviewed the agent's actual diff

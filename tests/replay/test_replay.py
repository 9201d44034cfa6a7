"""Replay the committed ticket histories against today's TicketWorkflow.

A failure here means a change to workflow code would break tickets that are running in production:
guard the change with workflow.patched() (see docs/workflow-changes.md) instead of regenerating.
Record histories of new paths on purpose (existing files are never overwritten):
    TICKETFLOW_RECORD_HISTORIES=1 python -m pytest tests/replay -k record
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.settings import Settings
from clients import tickets
from tests.fakes.ollama_server import FakeOllama, Fault, example_backlog_responder, refused_url, serve
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.llm.llm_helpers import with_models
from workflows.contracts import TicketState
from workflows.ticket import TicketWorkflow

HISTORIES = Path(__file__).parent / "histories"
pytestmark = pytest.mark.asyncio(loop_scope="session")


def committed_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


async def test_there_are_histories_to_replay() -> None:
    names = {path.stem for path in committed_histories()}
    assert {"done", "fix-loop", "blocked-unblocked", "cancelled", "dependencies"} <= names
    assert {"model-down-waited", "usage-limit-gated"} <= names
    assert {"done-released", "done-llm-queue"} <= names
    assert {"test-gate-env-error-retried", "test-gate-untested-draft"} <= names


@pytest.mark.parametrize("path", committed_histories(), ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    data = json.loads(path.read_text())
    history = WorkflowHistory.from_json(data["workflow_id"], data["history"])
    replayer = Replayer(workflows=[TicketWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


@pytest.mark.skipif(not os.environ.get("TICKETFLOW_RECORD_HISTORIES"), reason="records histories on request")
async def test_record_histories(client: Client, worker: Settings) -> None:
    worker.dependency_poll_seconds = 0.5
    scenarios = {
        "dependencies": example_ticket("demo-4-readme.md", id="replay-deps", depends_on=["replay-done"]),
        "done": example_ticket("demo-1-multiply.md", id="replay-done"),
        # DONE, then its worktree goes back to the pool (release_workspace, patch "release-workspace").
        "done-released": example_ticket("demo-1-multiply.md", id="replay-done-released"),
        "done-llm-queue": example_ticket("demo-2-divide-by-zero.md", id="replay-done-llm-queue"),
        "fix-loop": example_ticket("demo-3-power.md", id="replay-fix-loop"),
        "blocked-unblocked": example_ticket("demo-5-rounding.md", id="replay-blocked"),
        "cancelled": example_ticket("demo-5-rounding.md", id="replay-cancelled"),
    }
    for ticket in scenarios.values():
        await submit(client, worker, ticket)
    await wait_for_status(client, "replay-blocked", in_state(TicketState.BLOCKED))
    await tickets.unblock(client, "replay-blocked", "round half away from zero")
    await wait_for_status(client, "replay-cancelled", in_state(TicketState.BLOCKED))
    await tickets.cancel(client, "replay-cancelled", "recorded cancellation")
    for name, ticket in scenarios.items():
        await record(client, name, ticket.id)


@pytest.mark.skipif(not os.environ.get("TICKETFLOW_RECORD_HISTORIES"), reason="records histories on request")
async def test_record_model_histories(client: Client, worker: Settings) -> None:
    """Model-backed stages: a server down through the retries, then a usage limit behind the gate."""
    down = refused_url()
    chains = {"classify": ["small:latest"], "review": ["small:latest"]}
    worker.models = with_models(worker, {"local": down}, **chains).models
    worker.model_down_first_wait_seconds = 1
    waited = example_ticket("demo-1-multiply.md", id="replay-model-down")
    await submit(client, worker, waited)
    await wait_for_status(client, waited.id, in_state(TicketState.WAITING_FOR_MODEL), timeout=60)
    fake = FakeOllama(models={"small:latest"}, responder=example_backlog_responder)
    with serve(fake, port=int(down.rsplit(":", 1)[1])):
        await record(client, "model-down-waited", waited.id)
        fake.script("small:latest", Fault("usage_limit", seconds=3))
        gated = example_ticket("demo-4-readme.md", id="replay-limit-gated")
        await submit(client, worker, gated)
        await record(client, "usage-limit-gated", gated.id)


@pytest.mark.skipif(not os.environ.get("TICKETFLOW_RECORD_HISTORIES"), reason="records histories on request")
async def test_record_test_gate_histories(client: Client, worker: Settings) -> None:
    """The test gate (patch "test-gate-outcomes"): a runner that is not there blocks the ticket, the
    operator fixes the configuration and retries the checks; a run of no tests where tests are optional
    opens an untested draft PR."""
    calc = worker.repos["calc"]
    worker.repos["calc"] = calc.model_copy(update={"test_command": "no-such-runner --all"})
    broken = example_ticket("demo-1-multiply.md", id="replay-env-error")
    await submit(client, worker, broken)
    await wait_for_status(client, broken.id, in_state(TicketState.BLOCKED))
    worker.repos["calc"] = calc
    await tickets.retry(client, worker, broken.id)
    await record(client, "test-gate-env-error-retried", broken.id)

    worker.repos["calc"] = calc.model_copy(
        update={"test_command": "python -m unittest discover -p 'nothing_*.py'", "require_tests": False}
    )
    untested = example_ticket("demo-4-readme.md", id="replay-untested")
    await submit(client, worker, untested)
    await record(client, "test-gate-untested-draft", untested.id)


async def record(client: Client, name: str, ticket_id: str) -> None:
    """Wait for the ticket to finish and write its history, unless one by that name exists."""
    await result_of(client, ticket_id)
    path = HISTORIES / f"{name}.json"
    if path.exists():
        return
    HISTORIES.mkdir(exist_ok=True)
    handle = tickets.handle_for(client, ticket_id)
    history = await handle.fetch_history()
    data = {"workflow_id": handle.id, "history": json.loads(history.to_json())}
    path.write_text(json.dumps(data, indent=1) + "\n")

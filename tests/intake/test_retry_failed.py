"""retry-failed on the dev server: transient failures re-run, human and permanent ones stay.

The failures come from a stand-in registered as TicketWorkflow that fails exactly the way the real one
does (ApplicationError type TicketFailed, the next run's input in its details), so each kind of
failure is one quick run instead of a week-long blocked timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.settings import Settings
from clients import intake, tickets
from clients.cli import main
from workflows import policy
from workflows.contracts import Ticket, TicketRun

REASONS = {
    "transient": "blocked for 1 hour with no answer: open_pr failed (retries exhausted): host error (502)",
    "human": "blocked for 1 hour with no answer: the agent needs help: which API?",
    "permanent": "blocked for 1 hour with no answer: open_pr failed (not retryable): authentication failed",
}


@workflow.defn(name=policy.WORKFLOW_TYPE)
class FailingTicket:
    @workflow.run
    async def run(self, run: TicketRun) -> None:
        kind = run.ticket.id.rsplit("-", 1)[1]
        raise ApplicationError(
            REASONS[kind], run.model_dump(mode="json"), type="TicketFailed", non_retryable=True
        )


async def _failed(client: Client, ticket_id: str) -> None:
    for _ in range(100):
        found = [t async for t in client.list_workflows(f"WorkflowId = 'ticket-{ticket_id}'")]
        if found and found[0].status and found[0].status.name == "FAILED":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{ticket_id} never showed up as failed")


async def test_only_transient_failures_are_retried(client: Client, settings: Settings) -> None:
    prefix = f"rf{uuid.uuid4().hex[:5]}"
    ids = {kind: f"{prefix}-{kind}" for kind in REASONS}
    async with Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[FailingTicket],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for ticket_id in ids.values():
            ticket = Ticket(id=ticket_id, title="t", body="b", repo="calc")
            await tickets.submit(client, settings, ticket, check_repo=False)
        for ticket_id in ids.values():
            await _failed(client, ticket_id)

        listed = {
            kind: await intake.retry_failed(client, settings, dry_run=True, ticket_id=ticket_id)
            for kind, ticket_id in ids.items()
        }
        done = {
            kind: await intake.retry_failed(client, settings, ticket_id=ticket_id)
            for kind, ticket_id in ids.items()
        }

    assert {kind: [(f.kind, f.retried) for f in found] for kind, found in listed.items()} == {
        "transient": [("transient", None)],
        "human": [("human", None)],
        "permanent": [("permanent", None)],
    }
    assert done["transient"][0].retried == f"ticket {ids['transient']} restarted at the start"
    assert done["human"][0].retried is None and done["permanent"][0].retried is None


def test_cli_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("TICKETFLOW_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["intake", str(tmp_path / "nowhere")]) == 1
    assert main(["intake"]) == 1
    assert main(["intake", "jira:PROJ-1"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "does not exist" in lines[0] and "name a SOURCE" in lines[1] and "unknown source kind" in lines[2]

"""Notifications: JSON webhook, Slack-compatible webhook and ntfy against a local HTTP receiver;
a failing receiver is retried by Temporal."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.notify import NotifyActivities
from activities.settings import NotifyTarget, Settings
from tests.observability.conftest import Receiver
from workflows import policy
from workflows.contracts import NotifyRequest, Stage, TicketState

BLOCKED = NotifyRequest(
    ticket_id="PAY-12",
    title="Fix rounding in invoices",
    state=TicketState.BLOCKED,
    stage=Stage.RUN_AGENT,
    reason="the agent needs help: half-up or half-even?",
    unblock_command='ticketflow unblock PAY-12 --guidance "<what the agent should do>"',
    workflow_id="ticket-PAY-12",
    trace_id="0af7651916cd43dd8448eb211c80319c",
)


def targets(receiver: Receiver, *events: str) -> list[NotifyTarget]:
    chosen = list(events) or ["BLOCKED", "DONE", "FAILED"]
    return [
        NotifyTarget.model_validate(
            {"kind": kind, "url": f"{receiver.url}/{kind}?token=s3cret-token", "events": chosen}
        )
        for kind in ("webhook", "slack", "ntfy")
    ]


async def test_blocked_reaches_webhook_slack_and_ntfy(settings: Settings, receiver: Receiver) -> None:
    settings.notify = targets(receiver)
    told = await ActivityEnvironment().run(NotifyActivities(settings).notify, BLOCKED)
    assert told == 3
    by_path = {r.path.split("?")[0]: r for r in receiver.requests}

    hook = json.loads(by_path["/webhook"].body)
    assert hook["event"] == "ticket.blocked" and hook["ticket_id"] == "PAY-12"
    assert hook["reason"] == BLOCKED.reason and hook["unblock_command"] == BLOCKED.unblock_command
    assert hook["workflow_url"].endswith("/namespaces/default/workflows/ticket-PAY-12")
    assert by_path["/webhook"].headers["Idempotency-Key"] == hook["idempotency_key"]

    slack = json.loads(by_path["/slack"].body)
    assert set(slack) == {"text"}
    assert "PAY-12" in slack["text"] and "ticketflow unblock PAY-12" in slack["text"]

    ntfy = by_path["/ntfy"]
    assert ntfy.headers["Title"] == "ticketflow: PAY-12 BLOCKED"
    assert ntfy.headers["Priority"] == "high" and ntfy.headers["Click"] == hook["workflow_url"]
    assert "half-up or half-even?" in ntfy.body.decode()


async def test_targets_only_get_the_events_they_asked_for(settings: Settings, receiver: Receiver) -> None:
    settings.notify = targets(receiver, "FAILED")
    done = BLOCKED.model_copy(update={"state": TicketState.DONE, "pr_url": "https://example/pr/1"})
    assert await ActivityEnvironment().run(NotifyActivities(settings).notify, done) == 0
    assert receiver.requests == []


async def test_a_failed_delivery_raises_without_leaking_the_url(
    settings: Settings, receiver: Receiver
) -> None:
    settings.notify = targets(receiver)[:1]
    receiver.fail_first = 1
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(NotifyActivities(settings).notify, BLOCKED)
    assert raised.value.type == "NotifyFailed" and not raised.value.non_retryable
    assert "s3cret-token" not in str(raised.value) and "webhook target #1" in str(raised.value)


@workflow.defn(sandboxed=False)
class NotifyOnceWorkflow:
    """Stands in for TicketWorkflow's call: the notify activity with the NOTIFY policy."""

    @workflow.run
    async def run(self, request: NotifyRequest) -> int:
        told: int = await workflow.execute_activity(
            policy.NOTIFY.name,
            request,
            result_type=int,
            start_to_close_timeout=policy.NOTIFY.start_to_close,
            retry_policy=policy.NOTIFY.retry,
        )
        return told


async def test_temporal_retries_a_receiver_that_is_down(
    client: Client, settings: Settings, receiver: Receiver
) -> None:
    settings.notify = targets(receiver)[:1]
    receiver.fail_first = 1  # the first delivery gets a 503; Temporal retries after NOTIFY's interval
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[NotifyOnceWorkflow],
        activities=[NotifyActivities(settings).notify],
    ):
        told = await client.execute_workflow(
            NotifyOnceWorkflow.run,
            BLOCKED,
            id=f"notify-{queue}",
            task_queue=queue,
            execution_timeout=timedelta(seconds=60),
        )
    assert told == 1 and len(receiver.requests) == 1

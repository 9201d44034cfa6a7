"""Intake against the real dev server: idempotent starts in order, the poll Schedule, the activities."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, ScheduleIntervalSpec
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.intake import IntakeActivities
from activities.settings import Settings
from activities.writeback import WriteBackActivities
from clients import intake
from clients.sources import open_source
from tests.intake.conftest import ticket_text
from workflows import policy
from workflows.contracts import IntakePollRequest, Ticket, TicketRun, TicketState, WriteBackRequest
from workflows.intake import IntakeWorkflow


def _write(backlog: Path, name: str, **fields: Any) -> None:
    (backlog / "todo" / f"{name}.md").write_text(ticket_text(name, **fields))


async def test_intake_starts_each_ticket_once_most_urgent_first(
    client: Client, settings: Settings, backlog: Path
) -> None:
    p = f"i{uuid.uuid4().hex[:6]}"
    _write(backlog, f"{p}-low", priority="low")
    _write(backlog, f"{p}-urgent", priority="critical")
    _write(backlog, f"{p}-child", priority=1, depends_on=[f"{p}-low"])
    _write(backlog, f"{p}-loop-a", depends_on=[f"{p}-loop-b"])
    _write(backlog, f"{p}-loop-b", depends_on=[f"{p}-loop-a"])
    _write(backlog, f"{p}-orphan", depends_on=[f"{p}-nowhere"])
    source = open_source(f"{backlog}?repo=calc", settings)

    first = await intake.run_intake(client, settings, source)
    second = await intake.run_intake(client, settings, source)

    assert first.started == [f"{p}-urgent", f"{p}-low", f"{p}-child"]
    assert sorted(first.rejected) == [
        f"{p}-loop-a: dependency cycle {p}-loop-a -> {p}-loop-b -> {p}-loop-a",
        f"{p}-loop-b: dependency cycle {p}-loop-a -> {p}-loop-b -> {p}-loop-a",
        f"{p}-orphan: depends on unknown ticket(s) {p}-nowhere",
    ]
    assert second.started == [] and len(second.existing) == 3 and first.errors == second.errors == []
    assert sorted(f.name for f in (backlog / "doing").iterdir()) == sorted(f"{t}.md" for t in first.started)
    # A dependency on a ticket that already has a workflow is fine, even outside the batch.
    _write(backlog, f"{p}-later", depends_on=[f"{p}-urgent"])
    assert (await intake.run_intake(client, settings, source)).started == [f"{p}-later"]


async def test_dry_run_starts_nothing(client: Client, settings: Settings, backlog: Path) -> None:
    name = f"dry{uuid.uuid4().hex[:6]}"
    _write(backlog, name)
    report = await intake.run_intake(
        client, settings, open_source(f"{backlog}?repo=calc", settings), dry_run=True
    )
    assert report.started == [name] and not await intake.workflow_exists(client, name)
    assert (backlog / "todo" / f"{name}.md").is_file()


async def test_schedule_is_created_then_updated(client: Client, settings: Settings, backlog: Path) -> None:
    sources = [f"{backlog}?repo=calc"]
    try:
        assert await intake.ensure_schedule(client, settings, sources) == "created"
        faster = settings.model_copy(update={"intake_interval_minutes": 2.0})
        assert await intake.ensure_schedule(client, faster, sources) == "updated"
        described = await client.get_schedule_handle(policy.INTAKE_SCHEDULE_ID).describe()
    finally:
        await client.get_schedule_handle(policy.INTAKE_SCHEDULE_ID).delete()
    assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=2))]
    with pytest.raises(Exception, match="no sources to poll"):
        await intake.ensure_schedule(client, settings, [])


async def test_poll_sources_activity_starts_tickets(
    client: Client, settings: Settings, backlog: Path
) -> None:
    name = f"poll{uuid.uuid4().hex[:6]}"
    _write(backlog, name)
    poll = IntakeActivities(settings).poll_sources
    request = IntakePollRequest(sources=[f"{backlog}?repo=calc", "jira:nope"])

    result = await ActivityEnvironment(client=client).run(poll, request)

    assert result.started == [name] and await intake.workflow_exists(client, name)
    assert result.errors == [
        "jira:nope: unknown source kind 'jira' (known: backlog, beads, gitea, github, gitlab)"
    ]


async def test_write_back_activity(settings: Settings, backlog: Path) -> None:
    _write(backlog, "wb")
    (ticket,) = (await open_source(f"{backlog}?repo=calc", settings).fetch()).tickets
    write_back = WriteBackActivities(settings).write_back
    env = ActivityEnvironment()

    done = await env.run(
        write_back, WriteBackRequest(ticket=ticket, state=TicketState.DONE, pr_url="file:///x#pull/1")
    )
    assert done.changed and (backlog / "done" / "wb.md").is_file()
    unsourced = Ticket(id="x", title="x", body="x", repo="calc")
    assert not (await env.run(write_back, WriteBackRequest(ticket=unsourced, state=TicketState.DONE))).changed
    gone = ticket.model_copy(update={"source": f"backlog:{backlog / 'missing'}#wb.md"})
    with pytest.raises(ApplicationError) as err:
        await env.run(write_back, WriteBackRequest(ticket=gone, state=TicketState.FAILED, reason="x"))
    assert err.value.type == "InvalidTicket" and err.value.non_retryable


async def test_intake_workflow_polls_through_its_activity(
    client: Client, settings: Settings, backlog: Path
) -> None:
    name = f"wf{uuid.uuid4().hex[:6]}"
    _write(backlog, name, priority="high")
    queue = f"{settings.task_queue}-intake"
    activities = [IntakeActivities(settings).poll_sources]
    async with Worker(client, task_queue=queue, workflows=[IntakeWorkflow], activities=activities):
        result = await client.execute_workflow(
            IntakeWorkflow.run,
            IntakePollRequest(sources=[f"{backlog}?repo=calc"]),
            id=f"intake-{name}",
            task_queue=queue,
        )
    assert result.started == [name] and await intake.workflow_exists(client, name)


async def test_dependencies_the_source_records_as_done_are_met(
    client: Client, settings: Settings, backlog: Path
) -> None:
    p = f"d{uuid.uuid4().hex[:6]}"
    (backlog / "done" / f"{p}-old.md").write_text(ticket_text(f"{p}-old"))  # its workflow is long gone
    _write(backlog, f"{p}-new", depends_on=[f"{p}-old"])

    report = await intake.run_intake(client, settings, open_source(f"{backlog}?repo=calc", settings))

    assert report.started == [f"{p}-new"]
    history = await client.get_workflow_handle(f"ticket-{p}-new").fetch_history()
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    (run,) = await client.data_converter.decode(payloads, [TicketRun])
    assert run.ticket.depends_on == []

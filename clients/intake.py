"""Intake: read a ticket source, check dependencies, and start each new ticket once, most urgent first.

Starting is idempotent because the workflow id is the ticket id (derived from the source's own id), so
polling a source again starts nothing that already runs or ran. Dependency problems are caught here,
before anything starts: a cycle is reported with its path spelled out, and a dependency that names
neither a ticket of the batch, nor an item the source knows, nor an existing workflow is refused.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.exceptions import ApplicationError

from activities.settings import Settings
from clients import tickets
from clients.sources import Fetched, SourceError, TicketSource, open_source
from workflows import policy
from workflows.contracts import IntakePollRequest, Ticket, workflow_id_for


@dataclass
class Plan:
    order: list[Ticket]
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass
class IntakeReport:
    source: str
    started: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, as a closed path ['a', 'b', 'a'] (iterative DFS, no recursion limit)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = [root]
        edges = [iter(graph.get(root, []))]
        state[root] = 1
        while path:
            nxt = next(edges[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                edges.pop()
            elif state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif not state.get(nxt) and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                edges.append(iter(graph.get(nxt, [])))
    return cycles


def plan_intake(batch: Iterable[Ticket], known: set[str]) -> Plan:
    """Pure: which tickets may start, in order: dependencies first, then priority, then file order."""
    tickets: dict[str, Ticket] = {}
    rejected: dict[str, str] = {}
    for ticket in batch:
        if ticket.id in tickets:
            rejected[ticket.id] = f"ticket id {ticket.id} appears twice ({ticket.source or 'no source'})"
        tickets.setdefault(ticket.id, ticket)
    for ticket in tickets.values():
        unknown = [d for d in ticket.depends_on if d not in tickets and d not in known]
        if unknown:
            rejected[ticket.id] = f"depends on unknown ticket(s) {', '.join(unknown)}"
    graph = {t.id: [d for d in t.depends_on if d in tickets] for t in tickets.values()}
    for cycle in find_cycles(graph):
        for ticket_id in cycle:
            rejected.setdefault(ticket_id, f"dependency cycle {' -> '.join(cycle)}")
    _reject_dependents(graph, rejected)
    return Plan(_ordered(tickets, graph, rejected), rejected)


def _reject_dependents(graph: dict[str, list[str]], rejected: dict[str, str]) -> None:
    changed = True
    while changed:
        changed = False
        for ticket_id, deps in graph.items():
            bad = next((d for d in deps if d in rejected), None)
            if bad is not None and ticket_id not in rejected:
                rejected[ticket_id] = f"depends on {bad}, which was refused"
                changed = True


def _ordered(
    tickets: dict[str, Ticket], graph: dict[str, list[str]], rejected: dict[str, str]
) -> list[Ticket]:
    """Kahn's algorithm on a (priority, position) heap: the most urgent of the tickets whose deps started."""
    position = {ticket_id: i for i, ticket_id in enumerate(tickets)}
    live = [t for t in tickets if t not in rejected]
    waiting = {t: {d for d in graph[t] if d not in rejected} for t in live}
    dependents: dict[str, list[str]] = {t: [] for t in live}
    for ticket_id, deps in waiting.items():
        for dep in deps:
            dependents[dep].append(ticket_id)
    ready = [(tickets[t].priority, position[t], t) for t in live if not waiting[t]]
    heapq.heapify(ready)
    order: list[Ticket] = []
    while ready:
        _, _, ticket_id = heapq.heappop(ready)
        order.append(tickets[ticket_id])
        for dependent in dependents[ticket_id]:
            waiting[dependent].discard(ticket_id)
            if not waiting[dependent]:
                heapq.heappush(ready, (tickets[dependent].priority, position[dependent], dependent))
    return order


async def workflow_exists(client: Client, ticket_id: str) -> bool:
    try:
        await tickets.describe(client, ticket_id)
    except tickets.TicketOperationError:
        return False
    return True


async def run_intake(
    client: Client,
    settings: Settings,
    source: TicketSource,
    *,
    dry_run: bool = False,
    fetched: Fetched | None = None,
) -> IntakeReport:
    """Start the source's new tickets (or the given `fetched` ones, e.g. from a webhook event)."""
    report = IntakeReport(source=source.spec.render())
    fetched = fetched if fetched is not None else await source.fetch()
    report.errors += fetched.errors
    batch_ids = {t.id for t in fetched.tickets}
    outside = {d for t in fetched.tickets for d in t.depends_on} - batch_ids
    # A dependency the source records as done is met, even once Temporal has dropped its workflow
    # (retention), so it is not waited for.
    done = outside & await source.done_ids()
    batch = [_without(t, done) for t in fetched.tickets]
    known = (outside - done) & await source.known_ids()
    known |= {d for d in sorted(outside - done - known) if await workflow_exists(client, d)}
    plan = plan_intake(batch, known)
    report.rejected += [f"{ticket_id}: {reason}" for ticket_id, reason in plan.rejected.items()]
    for ticket in plan.order:
        if dry_run:
            report.started.append(ticket.id)
            continue
        await _start_one(client, settings, source, ticket, report)
    return report


def _without(ticket: Ticket, met: set[str]) -> Ticket:
    if not met.intersection(ticket.depends_on):
        return ticket
    return ticket.model_copy(update={"depends_on": [d for d in ticket.depends_on if d not in met]})


async def _start_one(
    client: Client, settings: Settings, source: TicketSource, ticket: Ticket, report: IntakeReport
) -> None:
    try:
        result = await tickets.submit(client, settings, ticket)
    except tickets.TicketOperationError as exc:
        report.errors.append(str(exc))
        return
    if result.started:
        report.started.append(ticket.id)
    else:
        report.existing.append(f"{ticket.id} ({result.existing_state})")
    if result.started or result.existing_status == WorkflowExecutionStatus.RUNNING.name:
        try:
            await source.mark_started(ticket)
        except SourceError as exc:
            report.errors.append(f"{ticket.id}: started, but the source was not updated: {exc}")


# ------------------------------------------------------------------------------------ retry-failed

TRANSIENT = "transient"
PERMANENT = "permanent"
HUMAN = "human"
_TRANSIENT_MARKERS = ("failed (retries exhausted)", "failed (timed out)")


def failure_kind(error_type: str | None, message: str) -> str:
    """Whether a FAILED ticket may be re-run unattended (docs/intake.md, "Recovering failed tickets").

    A ticket fails only after waiting BLOCKED for a human. Transient: the block was a stage that ran out
    of retries or time on a retryable error (host down, rate limit), so nobody had to decide anything.
    Human: the agent asked a question, the fix loop ran out, approval never came. Permanent: a
    non-retryable error (bad credentials, unknown repo) or a failure outside ticketflow's control.
    """
    if error_type != "TicketFailed":
        return PERMANENT
    if "(not retryable)" in message:
        return PERMANENT
    if any(marker in message for marker in _TRANSIENT_MARKERS):
        return TRANSIENT
    return HUMAN


@dataclass
class FailedTicket:
    ticket_id: str
    kind: str
    reason: str
    retried: str | None = None


async def _failure_of(client: Client, workflow_id: str) -> tuple[str | None, str]:
    try:
        await client.get_workflow_handle(workflow_id).result(follow_runs=False)
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            return cause.type, cause.message
        return type(cause).__name__ if cause else None, str(cause or exc)
    return None, "did not fail"


async def retry_failed(
    client: Client,
    settings: Settings,
    *,
    dry_run: bool = False,
    max_age_days: float = 7.0,
    ticket_id: str | None = None,
) -> list[FailedTicket]:
    """Re-run FAILED tickets whose failure was transient; list the others with the reason they stay."""
    since = (datetime.now(UTC) - timedelta(days=max_age_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = (
        f"WorkflowType = '{policy.WORKFLOW_TYPE}' AND ExecutionStatus = 'Failed' AND CloseTime > '{since}'"
    )
    if ticket_id is not None:
        query += f" AND WorkflowId = '{workflow_id_for(ticket_id)}'"
    found: list[FailedTicket] = []
    async for execution in client.list_workflows(query):
        error_type, message = await _failure_of(client, execution.id)
        item = FailedTicket(execution.id.removeprefix("ticket-"), failure_kind(error_type, message), message)
        if item.kind == TRANSIENT and not dry_run:
            try:
                item.retried = await tickets.retry(client, settings, item.ticket_id, by="retry-failed")
            except tickets.TicketOperationError as exc:
                item.retried = f"not retried: {exc}"
        found.append(item)
    return found


# ---------------------------------------------------------------------------------------- schedule


def _schedule(settings: Settings, sources: list[str]) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            policy.INTAKE_WORKFLOW_TYPE,
            IntakePollRequest(sources=sources),
            id=f"{policy.INTAKE_SCHEDULE_ID}-poll",
            task_queue=settings.task_queue,
            static_summary=f"intake poll of {len(sources)} source(s)",
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(minutes=settings.intake_interval_minutes))]
        ),
        # A slow poll is never stacked behind another one: the next tick simply skips.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(client: Client, settings: Settings, sources: list[str] | None = None) -> str:
    """Create the intake Schedule, or update it to today's sources and interval (idempotent)."""
    chosen = list(sources if sources is not None else settings.sources)
    if not chosen:
        raise SourceError("no sources to poll: list them under `sources` in the configuration")
    for text in chosen:
        open_source(text, settings)  # a typo fails here, not in every poll
    schedule = _schedule(settings, chosen)
    try:
        await client.create_schedule(policy.INTAKE_SCHEDULE_ID, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(policy.INTAKE_SCHEDULE_ID)
        await handle.update(lambda _current: ScheduleUpdate(schedule=schedule))
        return "updated"

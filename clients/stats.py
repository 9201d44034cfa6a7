"""`ticketflow stats`: how tickets went over a time window, from Temporal itself (no second database).

Closed ticket runs come from visibility; each run's history gives its input (the ticket), the agents
that really ran (each run_agent result names its agent, whatever the worker's default_agent was then) and
its end (the TicketResult, or the TicketFailed failure that carries the status). Per ticket that yields
the outcome, duration, tokens and cost, the models used, the agent and the classified kind.
Tokens are recorded per ticket, not per model call, so a ticket that used several models is counted
under their combination ("a+b"); exact per-model token counts are in Prometheus (ticketflow_llm_tokens).
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowHistory
from temporalio.exceptions import ApplicationError

from workflows import policy
from workflows.contracts import AgentResult, TicketResult, TicketRun, TicketState, TicketStatus

NO_AGENT = "(no agent ran)"
CLOSED = "ExecutionStatus IN ('Completed', 'Failed', 'Canceled', 'Terminated', 'TimedOut')"
MAX_PARALLEL = 8
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class StatsError(Exception):
    pass


def parse_window(text: str) -> timedelta:
    match = _WINDOW.fullmatch(text.strip())
    if not match:
        raise StatsError(f"window {text!r} is not like 30m, 12h, 7d or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@dataclass
class TicketOutcome:
    ticket_id: str
    state: str
    duration_seconds: float | None
    models: str
    agent: str
    kind: str
    tokens: int
    cost_usd: float
    reason: str = ""


@dataclass
class Group:
    tickets: int = 0
    done: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Stats:
    window: str
    tickets: int
    done: int
    failed: int
    cancelled: int
    success_rate: float | None
    median_duration_seconds: float | None
    median_done_duration_seconds: float | None
    by_model: dict[str, Group] = field(default_factory=dict)
    by_agent: dict[str, Group] = field(default_factory=dict)
    by_kind: dict[str, Group] = field(default_factory=dict)
    top_failure_reason: str | None = None
    top_failure_count: int = 0
    outcomes: list[TicketOutcome] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_key(reason: str) -> str:
    """Group similar reasons: numbers and quoted bits vary between tickets, the shape does not."""
    text = re.sub(r"`[^`]*`|'[^']*'|\"[^\"]*\"", "…", reason)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text.strip()[:120]


async def agents_that_ran(client: Client, history: WorkflowHistory) -> list[str]:
    """The agent of every completed run_agent attempt, in order, as each result recorded it."""
    types: dict[int, str] = {}
    agents: list[str] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            types[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            if types.get(done.scheduled_event_id) != policy.RUN_AGENT.name or not done.result.payloads:
                continue
            result: AgentResult = (await client.data_converter.decode(done.result.payloads, [AgentResult]))[0]
            if result.agent:
                agents.append(result.agent)
    return agents


async def _run_outcome(client: Client, execution: WorkflowExecution) -> TicketOutcome:
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    run: TicketRun = (await client.data_converter.decode(started.input.payloads, [TicketRun]))[0]
    ran = list(dict.fromkeys(await agents_that_ran(client, history)))
    status, state, reason = await _ending(client, history, run)
    begin = status.started_at if status and status.started_at else execution.start_time
    end = execution.close_time
    tokens = status.tokens if status else None
    return TicketOutcome(
        ticket_id=run.ticket.id,
        state=state.value,
        duration_seconds=(end - begin).total_seconds() if end and begin else None,
        models="+".join(m for m in (status.models_used if status else []) if m) or "none",
        agent="+".join(ran) or NO_AGENT,
        kind=status.classification.kind if status and status.classification else "unclassified",
        tokens=tokens.total if tokens else 0,
        cost_usd=tokens.cost_usd if tokens else 0.0,
        reason=reason,
    )


async def _ending(
    client: Client, history: WorkflowHistory, run: TicketRun
) -> tuple[TicketStatus | None, TicketState, str]:
    last = history.events[-1]
    if last.HasField("workflow_execution_completed_event_attributes"):
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
        result: TicketResult = (await client.data_converter.decode(payloads, [TicketResult]))[0]
        reason = (
            result.status.events[-1].note
            if result.state is not TicketState.DONE and result.status.events
            else ""
        )
        return result.status, result.state, reason
    if last.HasField("workflow_execution_failed_event_attributes"):
        error = await client.data_converter.decode_failure(
            last.workflow_execution_failed_event_attributes.failure
        )
        status = None
        if isinstance(error, ApplicationError) and error.type == "TicketFailed" and error.details:
            carry = TicketRun.model_validate(error.details[0]).carry
            status = carry.status if carry else None
        return status, TicketState.FAILED, str(error)
    if last.HasField("workflow_execution_canceled_event_attributes"):
        return None, TicketState.CANCELLED, "cancelled through Temporal"
    if last.HasField("workflow_execution_terminated_event_attributes"):
        return (
            None,
            TicketState.FAILED,
            "terminated: " + last.workflow_execution_terminated_event_attributes.reason,
        )
    return None, TicketState.FAILED, "timed out"


def _latest_per_ticket(executions: list[WorkflowExecution]) -> list[WorkflowExecution]:
    """A retried ticket has several closed runs; its latest one says how it ended."""
    latest: dict[str, WorkflowExecution] = {}
    floor = datetime.min.replace(tzinfo=UTC)
    for ex in executions:
        current = latest.get(ex.id)
        if current is None or (ex.close_time or floor) > (current.close_time or floor):
            latest[ex.id] = ex
    return list(latest.values())


async def collect(client: Client, window: str = "7d", task_queue: str | None = None) -> Stats:
    since = datetime.now(UTC) - parse_window(window)
    query = f"WorkflowType = '{policy.WORKFLOW_TYPE}' AND {CLOSED} AND CloseTime > '{since.isoformat()}'"
    if task_queue:
        query += f" AND TaskQueue = '{task_queue}'"
    executions = _latest_per_ticket([ex async for ex in client.list_workflows(query)])
    gate = asyncio.Semaphore(MAX_PARALLEL)

    async def one(ex: WorkflowExecution) -> TicketOutcome:
        async with gate:
            return await _run_outcome(client, ex)

    outcomes = list(await asyncio.gather(*(one(ex) for ex in executions)))
    return summarize(window, outcomes)


def summarize(window: str, outcomes: list[TicketOutcome]) -> Stats:
    states = Counter(o.state for o in outcomes)
    finished = len(outcomes)
    durations = [o.duration_seconds for o in outcomes if o.duration_seconds is not None]
    done_durations = [
        o.duration_seconds for o in outcomes if o.state == "DONE" and o.duration_seconds is not None
    ]
    reasons = Counter(failure_key(o.reason) for o in outcomes if o.state == "FAILED" and o.reason)
    top = reasons.most_common(1)
    stats = Stats(
        window=window,
        tickets=finished,
        done=states["DONE"],
        failed=states["FAILED"],
        cancelled=states["CANCELLED"],
        success_rate=round(states["DONE"] / finished, 4) if finished else None,
        median_duration_seconds=statistics.median(durations) if durations else None,
        median_done_duration_seconds=statistics.median(done_durations) if done_durations else None,
        top_failure_reason=top[0][0] if top else None,
        top_failure_count=top[0][1] if top else 0,
        outcomes=sorted(outcomes, key=lambda o: o.ticket_id),
    )
    for attr, target in (("models", stats.by_model), ("agent", stats.by_agent), ("kind", stats.by_kind)):
        groups: dict[str, Group] = defaultdict(Group)
        for o in outcomes:
            group = groups[getattr(o, attr)]
            group.tickets += 1
            group.done += o.state == "DONE"
            group.tokens += o.tokens
            group.cost_usd = round(group.cost_usd + o.cost_usd, 6)
        target.update(sorted(groups.items()))
    return stats


def render_text(stats: Stats) -> str:
    if not stats.tickets:
        return f"no tickets finished in the last {stats.window}"
    rate = f"{stats.success_rate:.0%}" if stats.success_rate is not None else "-"
    lines = [
        f"last {stats.window}: {stats.tickets} ticket(s) finished: {stats.done} done, "
        f"{stats.failed} failed, {stats.cancelled} cancelled; success rate {rate}",
        f"median duration {_seconds(stats.median_duration_seconds)} "
        f"(done tickets {_seconds(stats.median_done_duration_seconds)})",
    ]
    for title, groups in (("model", stats.by_model), ("agent", stats.by_agent), ("kind", stats.by_kind)):
        lines.append(f"\nby {title}:")
        for name, g in groups.items():
            lines.append(
                f"  {name:<32} {g.tickets:>4} tickets {g.done:>4} done"
                f"  {g.tokens:>10,} tokens  ${g.cost_usd:.4f}"
            )
    if stats.top_failure_reason:
        lines.append(f"\nmost common failure ({stats.top_failure_count}x): {stats.top_failure_reason}")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 60:.1f}m" if value >= 60 else f"{value:.1f}s"

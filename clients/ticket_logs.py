"""`ticketflow logs` for a ticket whose agent ran on another machine.

The full per-attempt logs stay on the disk of the worker that ran the agent (`<state_dir>/logs/<id>/`).
Anywhere else, the ticket's Temporal history is what there is, and it holds enough to follow a ticket:
every completed `run_agent` attempt's AgentResult (agent, model, outcome, reason and the last lines of
its output), every attempt that failed (its error), and the host queue each ran on (so the full log can
be found). While the agent runs, `-f` follows the lines it streams into the ticket's status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from clients import tickets
from workflows import policy
from workflows.contracts import AgentResult, TicketStatus, workflow_id_for

FOLLOW_INTERVAL = 2.0


@dataclass
class RecordedAttempt:
    """One run_agent activity of the ticket, as its history recorded it."""

    number: int
    host: str
    outcome: str
    agent: str = ""
    model: str | None = None
    reason: str = ""
    lines: list[str] = field(default_factory=list)


def _host(task_queue: str) -> str:
    """`ticketflow@worker-1` -> `worker-1` (the host queue names the worker holding the worktree)."""
    return task_queue.rpartition("@")[2] if "@" in task_queue else task_queue


async def recorded_attempts(client: Client, ticket_id: str) -> list[RecordedAttempt]:
    await tickets.describe(client, ticket_id)  # an unknown ticket is a clear error
    history = await client.get_workflow_handle(workflow_id_for(ticket_id)).fetch_history()
    scheduled: dict[int, tuple[str, str]] = {}  # event id -> (activity type, task queue)
    attempts: list[RecordedAttempt] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_type.name, attrs.task_queue.name)
            continue
        if event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            kind, queue = scheduled.get(done.scheduled_event_id, ("", ""))
            if kind != policy.RUN_AGENT.name or not done.result.payloads:
                continue
            result: AgentResult = (await client.data_converter.decode(done.result.payloads, [AgentResult]))[0]
            attempts.append(
                RecordedAttempt(
                    number=len(attempts) + 1,
                    host=_host(queue),
                    outcome=result.outcome,
                    agent=result.agent,
                    model=result.model,
                    reason=result.reason,
                    lines=list(result.output_tail),
                )
            )
        elif event.HasField("activity_task_failed_event_attributes"):
            failed = event.activity_task_failed_event_attributes
            kind, queue = scheduled.get(failed.scheduled_event_id, ("", ""))
            if kind == policy.RUN_AGENT.name:
                message = " ".join(failed.failure.message.split())
                attempts.append(RecordedAttempt(len(attempts) + 1, _host(queue), "error", reason=message))
        elif event.HasField("activity_task_timed_out_event_attributes"):
            timed_out = event.activity_task_timed_out_event_attributes
            kind, queue = scheduled.get(timed_out.scheduled_event_id, ("", ""))
            if kind == policy.RUN_AGENT.name:
                attempts.append(RecordedAttempt(len(attempts) + 1, _host(queue), "timed out"))
    return attempts


def render_attempts(ticket_id: str, attempts: list[RecordedAttempt], logs_dir: str) -> str:
    if not attempts:
        return f"ticket {ticket_id}: no agent attempt has finished yet (`ticketflow logs {ticket_id} -f`)"
    hosts = sorted({a.host for a in attempts})
    lines = [
        f"ticket {ticket_id} ran on {', '.join(hosts)}; the full logs are there: {logs_dir}/{ticket_id}/",
        "Here: what the ticket's history recorded of each agent attempt (the last lines of its output).",
    ]
    for a in attempts:
        who = " ".join(part for part in (a.agent, f"({a.model})" if a.model else "") if part)
        lines.append(
            f"==> attempt {a.number} on {a.host}: {a.outcome}" + (f", {who}" if who else "") + " <=="
        )
        if a.reason:
            lines.append(f"reason: {a.reason}")
        lines += a.lines
    return "\n".join(lines)


def new_lines(seen: list[str], current: list[str]) -> list[str]:
    """The lines of `current` after the longest tail of `seen` it starts with (the status keeps a
    moving window of the newest lines, so the two overlap)."""
    for size in range(min(len(seen), len(current)), 0, -1):
        if seen[-size:] == current[:size]:
            return current[size:]
    return current


async def follow(
    client: Client,
    ticket_id: str,
    emit: Callable[[str], None],
    interval: float = FOLLOW_INTERVAL,
) -> TicketStatus:
    """Print the running agent's lines as the ticket's status receives them, until the ticket ends."""
    seen: list[str] = []
    while True:
        status = await tickets.status(client, ticket_id)
        for line in new_lines(seen, status.last_output):
            emit(line)
        seen = list(status.last_output)
        if status.state.is_final:
            return status
        await asyncio.sleep(interval)

"""Small helpers shared by workflow tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from activities.settings import Settings
from clients import tickets
from clients.ticket_files import load_ticket_file
from workflows.contracts import Ticket, TicketResult, TicketState, TicketStatus
from workflows.ticket import TicketWorkflow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_ticket(name: str, **changes: object) -> Ticket:
    """One of the example backlog tickets, pointed at the test's `calc` repository."""
    ticket = load_ticket_file(EXAMPLES / "backlog" / name, {"repo": "calc"})
    return ticket.model_copy(update={"repo": "calc", **changes})


async def wait_for_status(
    client: Client, ticket_id: str, ready: Callable[[TicketStatus], bool], timeout: float = 60
) -> TicketStatus:
    deadline = time.monotonic() + timeout
    last: TicketStatus | None = None
    while time.monotonic() < deadline:
        try:
            last = await tickets.status(client, ticket_id)
        except tickets.TicketOperationError:
            last = None
        if last is not None and ready(last):
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"ticket {ticket_id} never got there; last status: {last}")


def in_state(state: TicketState) -> Callable[[TicketStatus], bool]:
    return lambda status: status.state is state


async def result_of(client: Client, ticket_id: str, timeout: float = 90) -> TicketResult:
    handle = tickets.handle_for(client, ticket_id)
    result = await asyncio.wait_for(handle.result(), timeout)
    assert isinstance(result, TicketResult)
    return result


async def submit(client: Client, settings: Settings, ticket: Ticket) -> None:
    outcome = await tickets.submit(client, settings, ticket)
    assert outcome.started, outcome


def local_prs(remote: Path) -> list[dict[str, object]]:
    folder = remote / "ticketflow-pulls"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


__all__ = [
    "TicketWorkflow",
    "example_ticket",
    "in_state",
    "local_prs",
    "result_of",
    "submit",
    "wait_for_status",
]

"""Done-when of the intake issue: a Backlog.md folder of 20 tickets, some depending on others, mixed
priorities, run through the real worker in dependency order; each file ends in done/; a second intake
starts nothing new. The file moves need TicketWorkflow to call the write_back activity."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.client import Client

from activities.settings import Settings
from clients import intake, tickets
from clients.sources import open_source
from workflows.contracts import TicketState

COUNT = 20
PRIORITIES = ["critical", "high", "medium", "low", "lowest"]


def _ticket(ticket_id: str, priority: str, deps: list[str]) -> str:
    depends = f"depends_on: [{', '.join(deps)}]\n" if deps else ""
    return (
        f"---\nid: {ticket_id}\ntitle: Note {ticket_id}\npriority: {priority}\n{depends}---\n"
        f"Add notes/{ticket_id}.txt.\n\n<!-- demo-agent\nsteps:\n  - describe: write the note\n"
        f"    file: notes/{ticket_id}.txt\n    write: |\n      {ticket_id}\n-->\n"
    )


async def _wait_final(client: Client, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        states = {i: (await tickets.describe(client, i)).state for i in ids}
        finished = "?" not in states.values() and all(TicketState(s).is_final for s in states.values())
        if finished or asyncio.get_running_loop().time() > deadline:
            return states
        await asyncio.sleep(0.5)


async def test_twenty_tickets_run_in_dependency_order_and_land_in_done(
    client: Client, worker: Settings, backlog: Path
) -> None:
    settings = worker.model_copy(update={"dependency_poll_seconds": 0.5})
    prefix = f"e{uuid.uuid4().hex[:5]}"
    ids = [f"{prefix}-{n:02d}" for n in range(COUNT)]
    deps = {ids[n]: [ids[n - 1]] for n in range(1, COUNT, 3)} | {
        ids[n]: [ids[n - 2], ids[n - 5]] for n in (7, 14)
    }
    for n, ticket_id in enumerate(ids):
        text = _ticket(ticket_id, PRIORITIES[n % 5], deps.get(ticket_id, []))
        (backlog / "todo" / f"{ticket_id}.md").write_text(text)
    source = open_source(f"{backlog}?repo=calc", settings)

    first = await intake.run_intake(client, settings, source)
    assert sorted(first.started) == ids and first.rejected == first.errors == []
    states = await _wait_final(client, ids, timeout=150)
    assert set(states.values()) == {TicketState.DONE.value}, states

    statuses = {i: await tickets.status(client, i) for i in ids}
    for ticket_id, needs in deps.items():
        began = next(e.at for e in statuses[ticket_id].events if e.state is TicketState.CLASSIFYING)
        for dep in needs:
            finished = next(e.at for e in statuses[dep].events if e.state is TicketState.DONE)
            assert finished <= began, f"{ticket_id} started before {dep} was DONE"

    second = await intake.run_intake(client, settings, source)
    assert second.started == []
    assert sorted(p.stem for p in (backlog / "done").glob("*.md")) == ids

"""`ticketflow watch`: a live table of tickets (state, stage, model, iteration, elapsed), refreshed in place.

Rows come from Temporal visibility (the same list the Web UI shows); running tickets are asked for their
status (a query answered by a worker) for model, iteration and the blocked reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import Client

from activities.settings import Settings
from clients import tickets
from clients.connect import connect
from workflows.contracts import TicketStatus

STATE_STYLES = {
    "BLOCKED": "bold red",
    "FAILED": "red",
    "WAITING_FOR_LIMIT": "yellow",
    "WAITING_FOR_MODEL": "yellow",
    "AWAITING_APPROVAL": "magenta",
    "DONE": "green",
    "CANCELLED": "dim",
}
MAX_PARALLEL_QUERIES = 16
# A ticket whose worker is down cannot answer; its row shows what visibility knows instead of waiting.
QUERY_TIMEOUT = timedelta(seconds=2)


@dataclass
class WatchRow:
    ticket_id: str
    state: str
    stage: str | None
    model: str | None
    iteration: str
    elapsed_seconds: float | None
    title: str
    note: str


def _elapsed(summary: tickets.TicketSummary, status: TicketStatus | None, now: datetime) -> float | None:
    started = (status.started_at if status else None) or summary.started
    if started is None:
        return None
    end = status.updated_at if status and status.state.is_final and status.updated_at else now
    return max((end - started).total_seconds(), 0.0)


def to_row(summary: tickets.TicketSummary, status: TicketStatus | None, now: datetime) -> WatchRow:
    note = ""
    if status is not None:
        if status.blocked_reason:
            note = status.blocked_reason
        elif status.waiting_until:
            note = f"until {status.waiting_until.isoformat(timespec='minutes')}"
        elif status.pr_url:
            note = status.pr_url
    return WatchRow(
        ticket_id=summary.ticket_id,
        state=status.state.value if status else summary.state,
        stage=(status.stage.value if status and status.stage else None) or summary.stage,
        model=status.models_used[-1] if status and status.models_used else None,
        iteration=f"{status.iteration}/{status.max_iterations}" if status else "",
        elapsed_seconds=_elapsed(summary, status, now),
        title=summary.title,
        note=note,
    )


async def collect_rows(client: Client, state: str | None = None, ids: Collection[str] = ()) -> list[WatchRow]:
    found = [t for t in await tickets.list_tickets(client, state) if not ids or t.ticket_id in ids]
    gate = asyncio.Semaphore(MAX_PARALLEL_QUERIES)

    async def status_of(summary: tickets.TicketSummary) -> TicketStatus | None:
        if summary.status != "RUNNING":
            return None  # closed tickets: visibility says enough, and no worker needs to replay them
        async with gate:
            try:
                handle = tickets.handle_for(client, summary.ticket_id)
                status: TicketStatus = await handle.query(
                    "status", result_type=TicketStatus, rpc_timeout=QUERY_TIMEOUT
                )
                return status
            except Exception:
                return None  # no worker answering right now: show what visibility knows

    statuses = await asyncio.gather(*(status_of(s) for s in found))
    now = datetime.now(UTC)
    return [to_row(s, st, now) for s, st in zip(found, statuses, strict=True)]


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def render(rows: list[WatchRow]) -> Table:
    table = Table(title=f"ticketflow: {len(rows)} ticket(s)", expand=True)
    for name in ("ticket", "state", "stage", "model", "iter", "elapsed", "title / why"):
        table.add_column(name, no_wrap=name != "title / why")
    for row in rows:
        table.add_row(
            row.ticket_id,
            Text(row.state, style=STATE_STYLES.get(row.state, "cyan")),
            row.stage or "-",
            row.model or "-",
            row.iteration or "-",
            human_seconds(row.elapsed_seconds),
            row.title + (f"\n[dim]{row.note}[/dim]" if row.note else ""),
        )
    return table


async def watch(
    client: Client,
    *,
    state: str | None = None,
    ids: Collection[str] = (),
    once: bool = False,
    as_json: bool = False,
    interval: float = 2.0,
    console: Console | None = None,
) -> int:
    out = console or Console()
    rows = await collect_rows(client, state, ids)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2, default=str))
        return 0
    if once:
        out.print(render(rows))
        return 0
    with Live(render(rows), console=out, refresh_per_second=4, screen=False) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(render(await collect_rows(client, state, ids)))


async def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect(settings)
    return await watch(
        client, state=args.state, ids=args.ids, once=args.once, as_json=args.json, interval=args.interval
    )


async def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from clients import stats

    stats.parse_window(args.window)  # a bad window is a one-line error before any connection
    client = await connect(settings)
    result = await stats.collect(client, args.window, settings.default_agent)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(stats.render_text(result))
    return 0

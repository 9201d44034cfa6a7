"""`ticketflow watch`: a live table of tickets (state, stage, model, iteration, elapsed), refreshed in place.

Rows come from Temporal visibility (the same list the Web UI shows); running tickets are asked for their
status (a query answered by a worker) for model, iteration and the blocked reason. A closed ticket's
elapsed time is frozen at its close.

On a terminal at least WIDE columns wide it is a table; narrower (80 columns) each ticket is two lines:
its columns, then the title, why and model. Without a terminal it prints the two-line form as plain
text: once with --once, else a snapshot per refresh; --json prints one JSON line per refresh (once with
--once), for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console, Group
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
    end = now
    if status is not None and status.state.is_final and status.updated_at:
        end = status.updated_at
    elif summary.closed is not None:
        end = summary.closed  # closed tickets are not queried: visibility knows when they closed
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


WIDE = 120  # columns from which the table form fits; narrower terminals get two lines per ticket
TICKET_WIDTH, STAGE_WIDTH, STATE_WIDTH = 22, 16, len("WAITING_FOR_MODEL")


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


def _fit(text: str, width: int) -> str:
    """`text` in at most `width` characters: a long one keeps its start and end around an ellipsis."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def compact_lines(rows: list[WatchRow], width: int = 80) -> list[tuple[str, str, str]]:
    """Two lines per ticket for narrow terminals and plain output: (columns, state, detail); the state
    is returned apart so a terminal can colour it."""
    lines = []
    for row in rows:
        head = f"{_fit(row.ticket_id, TICKET_WIDTH):<{TICKET_WIDTH}} "
        tail = (
            f" {_fit(row.stage or '-', STAGE_WIDTH):<{STAGE_WIDTH}} {row.iteration or '-':>5} "
            f"{human_seconds(row.elapsed_seconds):>7}"
        )
        # Why a ticket waits matters more than its title; a DONE ticket's note is only its PR.
        parts = (row.title, row.note, row.model) if row.state == "DONE" else (row.note, row.title, row.model)
        detail = " · ".join(part for part in parts if part)
        lines.append((head, f"{row.state:<{STATE_WIDTH}}", tail + "\n" + _clip(f"  {detail}", width)))
    return lines


def render_compact(rows: list[WatchRow], width: int) -> Group:
    header = Text(f"ticketflow: {len(rows)} ticket(s)", style="bold")
    columns = (
        f"{'ticket':<{TICKET_WIDTH}} {'state':<{STATE_WIDTH}} {'stage':<{STAGE_WIDTH}} {'iter':>5} "
        f"{'elapsed':>7}"
    )
    texts = [header, Text(columns, style="dim")]
    for (head, state, rest), row in zip(compact_lines(rows, width), rows, strict=True):
        columns_line, detail = rest.split("\n", 1)
        line = Text(head)
        line.append(state, style=STATE_STYLES.get(row.state, "cyan"))
        line.append(columns_line)
        texts += [line, Text(detail, style="dim")]
    return Group(*texts)


def render_plain(rows: list[WatchRow], width: int = 80) -> str:
    columns = (
        f"{'ticket':<{TICKET_WIDTH}} {'state':<{STATE_WIDTH}} {'stage':<{STAGE_WIDTH}} {'iter':>5} "
        f"{'elapsed':>7}"
    )
    lines = [f"ticketflow: {len(rows)} ticket(s)", columns]
    lines += [head + state + rest for head, state, rest in compact_lines(rows, width)]
    return "\n".join(lines)


def render_for(rows: list[WatchRow], width: int) -> Table | Group:
    return render(rows) if width >= WIDE else render_compact(rows, width)


def json_line(rows: list[WatchRow], now: datetime) -> str:
    return json.dumps({"at": now.isoformat(), "tickets": [asdict(r) for r in rows]}, default=str)


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
    while True:
        rows = await collect_rows(client, state, ids)
        if as_json:
            print(json_line(rows, datetime.now(UTC)), flush=True)
        elif not out.is_terminal:
            print(render_plain(rows, out.width), end="\n\n" if not once else "\n", flush=True)
        elif once:
            out.print(render_for(rows, out.width))
        else:
            break  # a terminal: refreshed in place below
        if once:
            return 0
        await asyncio.sleep(interval)
    with Live(render_for(rows, out.width), console=out, refresh_per_second=4, screen=False) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(render_for(await collect_rows(client, state, ids), out.width))


async def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect(settings)
    return await watch(
        client, state=args.state, ids=args.ids, once=args.once, as_json=args.json, interval=args.interval
    )


async def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from clients import stats

    stats.parse_window(args.window)  # a bad window is a one-line error before any connection
    client = await connect(settings)
    result = await stats.collect(client, args.window)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(stats.render_text(result))
    return 0

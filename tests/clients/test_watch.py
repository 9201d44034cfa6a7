"""`ticketflow watch` at 80 columns, without a terminal, as a JSON stream; elapsed time of closed tickets."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console, Group
from rich.table import Table

from clients import watch
from clients.tickets import TicketSummary

ROWS = [
    watch.WatchRow(
        "acme-widgets-1234567890-abcdef",
        "BLOCKED",
        "run_agent",
        "ollama/qwen2.5-coder:14b",
        "2/3",
        3725.0,
        "Fix rounding in invoices so they round half up, as the accountants asked in the last review",
        "the agent asks: half-up or half-even?",
    ),
    watch.WatchRow(
        "PAY-13", "DONE", None, None, "", 61.0, "Add a test", "https://github.com/acme/app/pull/1"
    ),
]


def test_eighty_columns_get_two_lines_per_ticket_that_fit() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, force_terminal=True)
    assert isinstance(watch.render_for(ROWS, 80), Group)
    assert isinstance(watch.render_for(ROWS, watch.WIDE), Table)
    console.print(watch.render_for(ROWS, 80))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    first, why = lines[2], lines[3]
    assert first.split()[1:] == ["BLOCKED", "run_agent", "2/3", "1h02m"]
    assert first.startswith("acme-widge") and first.split()[0].endswith("-abcdef")  # both ends of the id
    assert why.startswith("  the agent asks: half-up or half-even? · Fix rounding") and why.endswith("…")
    assert "Add a test · https://github.com/acme/app/pull/1" in lines[5]


def test_elapsed_time_of_a_closed_ticket_is_frozen_at_its_close() -> None:
    started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    summary = TicketSummary(
        "t-1", "ticket-t-1", "T", "DONE", None, 3, None, "COMPLETED", started, started + timedelta(minutes=5)
    )
    for later in (timedelta(minutes=10), timedelta(days=3)):
        row = watch.to_row(summary, None, started + later)
        assert row.elapsed_seconds == 300.0
    running = TicketSummary("t-2", "ticket-t-2", "T", "CODING", None, 3, None, "RUNNING", started)
    assert watch.to_row(running, None, started + timedelta(minutes=7)).elapsed_seconds == 420.0


@pytest.fixture
def fake_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    async def collect(client: Any, state: str | None = None, ids: Any = ()) -> list[watch.WatchRow]:
        calls.append(1)
        return ROWS

    monkeypatch.setattr(watch, "collect_rows", collect)
    return calls


async def test_once_without_a_terminal_is_plain_text(
    fake_rows: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    console = Console(file=io.StringIO(), width=80)  # not a terminal
    assert await watch.watch(None, once=True, console=console) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "\x1b[" not in out and "┃" not in out and "│" not in out
    assert out.splitlines()[0] == "ticketflow: 2 ticket(s)" and len(fake_rows) == 1
    assert all(len(line) <= 80 for line in out.splitlines())


async def test_json_is_one_line_per_refresh(fake_rows: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=io.StringIO(), width=80)
    task = asyncio.create_task(watch.watch(None, as_json=True, interval=0.05, console=console))  # type: ignore[arg-type]
    while len(fake_rows) < 3:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2
    for line in lines:
        snapshot = json.loads(line)
        assert [t["ticket_id"] for t in snapshot["tickets"]] == ["acme-widgets-1234567890-abcdef", "PAY-13"]
        assert datetime.fromisoformat(snapshot["at"]).tzinfo is not None


async def test_without_a_terminal_it_prints_a_snapshot_per_refresh(
    fake_rows: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    console = Console(file=io.StringIO(), width=80)
    task = asyncio.create_task(watch.watch(None, interval=0.05, console=console))  # type: ignore[arg-type]
    while len(fake_rows) < 2:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = capsys.readouterr().out
    assert out.count("ticketflow: 2 ticket(s)") >= 2 and "\x1b[" not in out

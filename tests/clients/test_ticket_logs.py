"""`ticketflow logs` on a machine where the agent did not run: what the ticket's history recorded."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.settings import Settings
from clients import cli
from clients.ticket_logs import new_lines
from tests.helpers import example_ticket, result_of, submit
from workflows.contracts import TicketState


async def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "load_settings", lambda: settings)
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_logs_of_a_ticket_run_on_another_host(
    client: Client,
    worker: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ticket = example_ticket("demo-1-multiply.md", id=f"logs-{uuid.uuid4().hex[:8]}")
    await submit(client, worker, ticket)
    assert (await result_of(client, ticket.id)).state is TicketState.DONE
    assert list((worker.logs_dir / ticket.id).glob("*.log"))  # the worker's host has the files

    elsewhere = worker.model_copy(update={"state_dir": tmp_path / "laptop"})  # no log files here
    code, out, err = await run_cli(monkeypatch, capsys, elsewhere, "logs", ticket.id)
    assert (code, err) == (0, "")
    assert f"ticket {ticket.id} ran on testhost; the full logs are there" in out
    assert "==> attempt 1 on testhost: done, demo" in out

    code, out, _ = await run_cli(monkeypatch, capsys, elsewhere, "logs", ticket.id, "--json")
    (attempt,) = json.loads(out)
    assert (code, attempt["host"], attempt["outcome"], attempt["agent"]) == (0, "testhost", "done", "demo")
    assert attempt["lines"]

    code, out, _ = await run_cli(monkeypatch, capsys, elsewhere, "logs", ticket.id, "-f")
    assert code == 0 and out.rstrip().endswith(f"==> {ticket.id} is DONE <==")

    code, _, err = await run_cli(monkeypatch, capsys, elsewhere, "logs", "no-such-ticket")
    assert code == 1 and err == "error: no ticket 'no-such-ticket' has been submitted\n"


def test_new_lines_of_a_moving_window() -> None:
    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines(["x"], ["y", "z"]) == ["y", "z"]

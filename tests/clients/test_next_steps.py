"""`ticketflow status`: the next steps it offers are the ones that work in the ticket's state, and a
reason left from an earlier block is not shown once the ticket moved on."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from activities.settings import Settings
from clients import cli, tickets
from workflows.contracts import Stage, TicketState, TicketStatus


def status(state: TicketState, stage: Stage | None = None, **changes: Any) -> TicketStatus:
    return TicketStatus(ticket_id="PAY-12", title="Fix rounding", state=state, stage=stage, **changes)


def commands(st: TicketStatus) -> list[str]:
    return [step.split("   (")[0] for step in tickets.next_steps(st)]


def test_blocked_on_the_agent_is_answered_retried_or_rolled_back() -> None:
    st = status(TicketState.BLOCKED, Stage.RUN_AGENT, blocked_reason="half-up?", last_good_commit="a" * 40)
    assert commands(st) == [
        'ticketflow unblock PAY-12 --guidance "<what the agent should do>"',
        "ticketflow retry PAY-12",
        "ticketflow rollback PAY-12",
        "ticketflow cancel PAY-12",
    ]
    no_checkpoint = status(TicketState.BLOCKED, Stage.RUN_CHECKS, blocked_reason="no test ran")
    assert "ticketflow rollback PAY-12" not in commands(no_checkpoint)


@pytest.mark.parametrize("stage", [Stage.CLASSIFY, Stage.PREPARE_WORKSPACE, Stage.OPEN_PR])
def test_blocked_on_configuration_is_retried_after_the_fix_not_unblocked(stage: Stage) -> None:
    st = status(TicketState.BLOCKED, stage, blocked_reason="repository not reachable")
    steps = tickets.next_steps(st)
    assert [s.split("   (")[0] for s in steps] == ["ticketflow retry PAY-12", "ticketflow cancel PAY-12"]
    assert "after fixing the cause" in steps[0]


def test_awaiting_approval_is_approved() -> None:
    assert commands(status(TicketState.AWAITING_APPROVAL, Stage.APPROVAL))[0] == "ticketflow approve PAY-12"
    budget = status(TicketState.AWAITING_APPROVAL, Stage.RUN_AGENT, token_budget=1000)
    assert commands(budget)[0] == "ticketflow approve PAY-12 --extra-tokens <tokens>"


def test_failed_is_retried_where_it_failed() -> None:
    steps = tickets.next_steps(status(TicketState.FAILED, Stage.RUN_AGENT, failed_stage=Stage.OPEN_PR))
    assert steps == ["ticketflow retry PAY-12   (restarts at open_pr; fix the cause first)"]


@pytest.mark.parametrize(
    "state",
    [TicketState.DONE, TicketState.CANCELLED, TicketState.WAITING_FOR_LIMIT, TicketState.WAITING_FOR_MODEL],
)
def test_nothing_to_do(state: TicketState) -> None:
    assert tickets.next_steps(status(state, Stage.RUN_AGENT, blocked_reason="old reason")) == []


def test_running_agent_can_be_followed() -> None:
    assert commands(status(TicketState.WORKING, Stage.RUN_AGENT)) == [
        "ticketflow logs PAY-12 -f",
        "ticketflow cancel PAY-12",
    ]


async def show(monkeypatch: pytest.MonkeyPatch, st: TicketStatus, capsys: Any, as_json: bool = False) -> str:
    async def fake_connect(settings: Settings) -> object:
        return object()

    async def fake_status(client: object, ticket_id: str) -> TicketStatus:
        return st

    monkeypatch.setattr(cli, "connect", fake_connect)
    monkeypatch.setattr(tickets, "status", fake_status)
    await cli.cmd_status(argparse.Namespace(id="PAY-12", json=as_json), Settings())
    out: str = capsys.readouterr().out
    return out


async def test_a_cancelled_ticket_shows_no_old_block(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    st = status(
        TicketState.CANCELLED,
        Stage.RUN_AGENT,
        blocked_reason="the agent asks: half-up?",
        unblock_command='ticketflow unblock PAY-12 --guidance "<what the agent should do>"',
    )
    out = await show(monkeypatch, st, capsys)
    assert "CANCELLED" in out
    assert "half-up" not in out and "unblock" not in out and "next" not in out


async def test_status_prints_the_next_steps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    st = status(TicketState.AWAITING_APPROVAL, Stage.APPROVAL)
    out = await show(monkeypatch, st, capsys)
    assert "  next       ticketflow approve PAY-12   (opens the PR)" in out.splitlines()
    data = json.loads(await show(monkeypatch, st, capsys, as_json=True))
    assert data["state"] == "AWAITING_APPROVAL" and data["next_steps"][0].startswith("ticketflow approve")

"""CLI agents inside the real workflow: a usage limit is waited out durably, then the same session resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.settings import Settings
from tests.agents.conftest import fake_config
from tests.helpers import example_ticket, in_state, local_prs, result_of, submit, wait_for_status
from workflows.contracts import TicketState

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_usage_limit_waits_then_resumes_the_same_session(
    client: Client, worker: Settings, example_remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", "usage_limit_once")
    monkeypatch.setenv("FAKE_AGENT_RESET_IN", "3")
    worker.agents["claude"] = fake_config("claude", sandbox="auto")
    ticket = example_ticket("demo-4-readme.md", id="limit-1", agent="claude")
    await submit(client, worker, ticket)

    waiting = await wait_for_status(client, ticket.id, in_state(TicketState.WAITING_FOR_LIMIT))
    assert waiting.waiting_until is not None and waiting.session_id
    result = await result_of(client, ticket.id)

    assert result.state is TicketState.DONE, result.status.events
    record = worker.state_dir / "runs" / ticket.id / "home" / "fake-agent-argv.jsonl"
    argvs = [json.loads(line)["argv"] for line in record.read_text().splitlines()]
    session = waiting.session_id
    assert len(argvs) == 2
    assert argvs[0][argvs[0].index("--session-id") + 1] == session and "--resume" not in argvs[0]
    assert argvs[1][argvs[1].index("--resume") + 1] == session
    assert result.status.session_id == session
    assert [pr["head"] for pr in local_prs(example_remote)] == [ticket.branch]
    assert result.status.tokens.cost_usd == pytest.approx(0.0123)

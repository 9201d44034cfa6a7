"""The native ollama agent: whole tickets on the real dev server and worker against our fake Ollama, plus
its worktree confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.agents.ollama_agent import ToolError, Workspace, tool_read, tool_write
from activities.settings import AgentConfig, Settings
from tests.fakes.ollama_server import FakeOllama, Fault, Reply, example_backlog_responder
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.llm.llm_helpers import call, multiply_session, use_ollama_agent
from workflows.contracts import TicketState


async def test_agent_edits_runs_tests_and_finishes(
    client: Client, worker: Settings, fake_ollama: FakeOllama
) -> None:
    use_ollama_agent(worker, fake_ollama)
    fake_ollama.script("big:latest", *multiply_session())
    ticket = example_ticket("demo-1-multiply.md", id="olla-1", agent="ollama")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE, result.status.blocked_reason
    assert "local/big:latest" in result.status.models_used
    assert result.status.tokens.prompt >= 2400 and result.status.tokens.completion >= 150
    chats = fake_ollama.chats()
    assert len(chats) == 4 and chats[0].body["tools"][0]["function"]["name"] == "list_files"
    tool_result = chats[1].body["messages"][-1]
    assert tool_result["role"] == "tool" and "def divide" in tool_result["content"]
    assert "PASSED" in chats[3].body["messages"][-1]["content"]  # the agent saw its tests pass


async def test_usage_limit_waits_durably_then_resumes(
    client: Client, worker: Settings, fake_ollama: FakeOllama
) -> None:
    use_ollama_agent(worker, fake_ollama)
    fake_ollama.script("big:latest", Fault("usage_limit", seconds=3), *multiply_session())
    ticket = example_ticket("demo-1-multiply.md", id="olla-limit", agent="ollama")
    await submit(client, worker, ticket)
    waiting = await wait_for_status(client, ticket.id, in_state(TicketState.WAITING_FOR_LIMIT), timeout=30)
    assert waiting.waiting_until is not None  # the reset the server named: a workflow timer, not a retry
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert fake_ollama.calls_while_limited == 0  # nobody called the provider before the reset
    assert len(fake_ollama.chats()) == 5


async def test_turn_limit_blocks_the_ticket(
    client: Client, worker: Settings, fake_ollama: FakeOllama
) -> None:
    use_ollama_agent(worker, fake_ollama)
    worker.agents["ollama"] = AgentConfig(kind="ollama", max_turns=2)
    fake_ollama.script("big:latest", *[Reply(tool_calls=[call("list_files")])] * 2)
    ticket = example_ticket("demo-1-multiply.md", id="olla-turns", agent="ollama")
    await submit(client, worker, ticket)
    status = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED), timeout=30)
    assert "turn limit of 2" in (status.blocked_reason or "")


def test_paths_stay_inside_the_worktree(tmp_path: Path) -> None:
    root = tmp_path / "wt"
    (root / ".git").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "linkdir")
    ws = Workspace(root, None)
    for bad in ("../secret.txt", "/etc/passwd", "link.txt", "linkdir/secret.txt", ".git/config", "a/../../x"):
        with pytest.raises(ToolError):
            tool_read(ws, bad)
    with pytest.raises(ToolError):
        tool_write(ws, "linkdir/new.txt", "escape")
    assert not (tmp_path / "new.txt").exists()
    assert tool_write(ws, "pkg/ok.py", "x = 1\n") == "wrote pkg/ok.py (1 lines)"
    assert "x = 1" in tool_read(ws, "pkg/ok.py")


@pytest.mark.parametrize("name", ["demo-1-multiply.md", "demo-2-divide-by-zero.md"])
async def test_example_tickets_on_the_fake_server(
    client: Client, worker: Settings, fake_ollama: FakeOllama, name: str
) -> None:
    """The offline demo's model: replies written for the example backlog drive the real agent loop."""
    use_ollama_agent(worker, fake_ollama)
    worker.models.classify = worker.models.review = ["small:latest"]
    fake_ollama.responder = example_backlog_responder
    ticket = example_ticket(name, id=f"olla-{name[:6]}", agent="ollama")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE, result.status.blocked_reason
    assert result.status.last_checks is not None and result.status.last_checks.passed
    assert {"local/small:latest", "local/big:latest"} <= set(result.status.models_used)

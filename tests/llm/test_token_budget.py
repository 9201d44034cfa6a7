"""A ticket over its token budget pauses for `approve` with extra tokens instead of being killed."""

from __future__ import annotations

from temporalio.client import Client

from activities.settings import Settings
from tests.fakes.ollama_server import FakeOllama, Reply
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.llm.llm_helpers import call, multiply_session, use_ollama_agent
from workflows.contracts import ApproveRequest, Budget, TicketState
from workflows.ticket import TicketWorkflow


async def test_budget_pause_and_extension(client: Client, worker: Settings, fake_ollama: FakeOllama) -> None:
    use_ollama_agent(worker, fake_ollama)
    session = multiply_session()  # 320 tokens, then 620 more: over a 500-token budget after two turns
    fake_ollama.script("big:latest", *session[:2], Reply(tool_calls=[call("run_tests")]), session[3])
    ticket = example_ticket("demo-1-multiply.md", id="budget-1", agent="ollama", budget=Budget(tokens=500))
    await submit(client, worker, ticket)
    paused = await wait_for_status(client, ticket.id, in_state(TicketState.AWAITING_APPROVAL), timeout=30)
    assert paused.tokens.total == 940 and "token budget of 500 reached" in paused.events[-1].note
    handle = client.get_workflow_handle(f"ticket-{ticket.id}")
    await handle.execute_update(TicketWorkflow.approve, ApproveRequest(by="alice", extra_tokens=5000))
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert result.status.token_budget == 5940
    assert len(fake_ollama.chats()) == 4  # the agent went on after the extension

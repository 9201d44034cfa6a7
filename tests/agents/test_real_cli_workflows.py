"""Each real agent CLI through TicketWorkflow on the dev server: the worker runs run_agent with the real
adapter, the real sandbox (loopback_ports: the fake API's port) and the real binary.

Per CLI: the model's first call is throttled (429, Retry-After 1 s) and retried by the CLI itself, then
it edits a file: the ticket is DONE, the edit is a checkpoint commit on the ticket's branch and in its
PR, and the ticket's tokens are the ones the API reported. Claude's usage limit is waited out on the
workflow's timer and the same session resumes; a wrong key leaves the ticket BLOCKED with a readable
message.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.settings import Settings
from tests.agents.real_cli_support import KINDS, codex_provider_args, real_config, set_env
from tests.fakes.model_apis import Edit, Failure, ModelAPIs, serve
from tests.helpers import example_ticket, in_state, local_prs, result_of, submit, wait_for_status
from workflows.contracts import TicketState

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.real_cli, pytest.mark.timeout(300)]

NOTE = "Functions: add, subtract, divide.\n"


@pytest.fixture
def fake() -> Iterator[ModelAPIs]:
    with serve() as api:
        yield api


def branch_file(remote: Path, branch: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(remote), "show", f"{branch}:{path}"], capture_output=True, text=True
    ).stdout


def checkpoint_subjects(settings: Settings, commit: str | None) -> list[str]:
    """The subjects of the ticket's checkpoint commits up to `commit`, from the repository's mirror."""
    for mirror in settings.mirrors_dir.iterdir() if commit and settings.mirrors_dir.is_dir() else []:
        out = subprocess.run(
            ["git", "--git-dir", str(mirror), "log", "--format=%s", str(commit)],
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            return [line for line in out.stdout.splitlines() if line.startswith("wip(ticketflow")]
    return []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_ticket_is_done_by_the_real_cli_after_its_own_retry(
    client: Client,
    worker: Settings,
    example_remote: Path,
    fake: ModelAPIs,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    set_env(monkeypatch, kind, fake)
    extra = codex_provider_args(fake.url, retries=1) if kind == "codex" else []
    worker.agents[kind] = real_config(kind, fake, extra_args=extra)
    fake.script(Failure("rate_limit", retry_after=1), Edit("docs/FUNCTIONS.md", NOTE))
    ticket = example_ticket("demo-4-readme.md", id=f"real-{kind}-1", agent=kind)
    await submit(client, worker, ticket)

    result = await result_of(client, ticket.id, timeout=240)

    assert result.state is TicketState.DONE, (result.status.blocked_reason, result.status.events[-5:])
    assert [pr["head"] for pr in local_prs(example_remote)] == [ticket.branch]
    assert branch_file(example_remote, ticket.branch, "docs/FUNCTIONS.md") == NOTE
    checkpoints = checkpoint_subjects(worker, result.status.last_commit)
    assert any("step 1: " in s and "FUNCTIONS.md" in s for s in checkpoints), checkpoints
    prompt, completion = fake.tokens()
    assert (result.status.tokens.prompt, result.status.tokens.completion) == (prompt, completion)


async def test_claude_usage_limit_waits_then_resumes_the_same_session(
    client: Client, worker: Settings, example_remote: Path, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, "claude", fake, oauth=True)
    worker.agents["claude"] = real_config("claude", fake, oauth=True)
    fake.script(Edit("docs/FUNCTIONS.md", NOTE), Failure("usage_limit", reset_in=3))
    ticket = example_ticket("demo-4-readme.md", id="real-claude-limit", agent="claude")
    await submit(client, worker, ticket)

    waiting = await wait_for_status(client, ticket.id, in_state(TicketState.WAITING_FOR_LIMIT), timeout=120)
    assert waiting.waiting_until is not None and waiting.session_id
    result = await result_of(client, ticket.id, timeout=240)

    assert result.state is TicketState.DONE, (result.status.blocked_reason, result.status.events[-5:])
    assert result.status.session_id == waiting.session_id
    resumed = [s for s in fake.agent_calls("anthropic") if s.status == 200][-1]
    assert len(resumed.body["messages"]) > 1, "the resumed run continued the conversation"
    assert branch_file(example_remote, ticket.branch, "docs/FUNCTIONS.md") == NOTE
    prompt, completion = fake.tokens()
    assert (result.status.tokens.prompt, result.status.tokens.completion) == (prompt, completion)


async def test_a_wrong_key_blocks_the_ticket_with_a_readable_message(
    client: Client, worker: Settings, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, "gemini", fake, "sk-wrong-key-0000000000")
    worker.agents["gemini"] = real_config("gemini", fake)
    ticket = example_ticket("demo-4-readme.md", id="real-gemini-auth", agent="gemini")
    await submit(client, worker, ticket)

    blocked = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED), timeout=120)

    reason = blocked.blocked_reason or ""
    assert (
        "could not authenticate: Gemini API error: API key not valid. Please pass a valid API key. " in reason
    )
    assert "{" not in reason
    assert len(fake.agent_calls("gemini")) == 1, "an auth failure is not retried"

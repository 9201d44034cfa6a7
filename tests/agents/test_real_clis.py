"""The real Claude Code, Codex, Gemini CLI and aider, driven through their adapters and the real sandbox,
against our protocol-faithful model APIs on 127.0.0.1 (tests/fakes/model_apis.py).

Each CLI runs with the exact argv its adapter builds, reaching the fake API only through the sandbox's
loopback_ports. What is checked is what a ticket depends on: the edit lands (and is a checkpoint step),
tokens are the ones the API reported (also across a resume), a usage limit is a usage_limit with its
reset and the next run resumes the same session, the CLI's own transient retries end in done, and an auth
failure is AgentAuthFailed with a readable message.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.agents import AGENT_KINDS, sandbox
from activities.agents.base import AgentRun
from activities.settings import Settings
from tests.agents.conftest import Harness
from tests.agents.real_cli_support import KINDS, codex_provider_args, real_config, set_env
from tests.fakes.model_apis import Edit, Failure, ModelAPIs, Run, Say, serve
from workflows.contracts import AgentResult

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.real_cli, pytest.mark.timeout(300)]


@pytest.fixture
def fake() -> Iterator[ModelAPIs]:
    with serve() as api:
        yield api


async def run_real(
    harness: Harness,
    kind: str,
    fake: ModelAPIs,
    mp: pytest.MonkeyPatch,
    *,
    resume: bool = False,
    key: str | None = None,
    oauth: bool = False,
    **changes: Any,
) -> AgentResult:
    """One attempt as run_agent makes it: the configured agent, wrapped in its sandbox plan."""
    if key is None:
        set_env(mp, kind, fake, oauth=oauth)
    else:
        set_env(mp, kind, fake, key, oauth=oauth)
    config = real_config(kind, fake, oauth=oauth, **changes)
    settings = Settings(state_dir=harness.root / "state", agents={kind: config}, default_agent=kind)
    plan = sandbox.config_plan(settings, kind, harness.worktree, [harness.root / "runs"])
    run: AgentRun = harness.agent_run(resume=resume, timeout=240)
    run.wrap = lambda argv: sandbox.wrap(argv, plan)
    return await AGENT_KINDS[kind](kind, config).run(run)


def status(worktree: Path) -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain"], cwd=worktree, capture_output=True, text=True)
    return {line[3:] for line in out.stdout.splitlines()}


def tool_results(fake: ModelAPIs) -> list[str]:
    """What the CLI sent back to the model as its tools' results (Anthropic Messages)."""
    found: list[str] = []
    for served in fake.agent_calls("anthropic"):
        last = (served.body.get("messages") or [{}])[-1]
        for block in last.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                found.append(content if isinstance(content, str) else str(content))
    return found


@pytest.mark.parametrize("kind", KINDS)
async def test_an_edit_lands_as_a_step_with_the_apis_tokens(
    harness: Harness, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Gemini starts under the default memory_mb (a cgroup limit, not RLIMIT_AS); Codex edits inside our
    sandbox (its own cannot nest); aider adds through a private index and leaves .gitignore alone."""
    fake.script(Edit("notes/hello.txt", "hello from the model\n"))
    result = await run_real(harness, kind, fake, monkeypatch)

    assert result.outcome == "done", (result, harness.lines[-20:])
    assert (harness.worktree / "notes" / "hello.txt").read_text() == "hello from the model\n"
    assert len(harness.steps) == 1 and "hello.txt" in harness.steps[0], harness.steps
    assert (result.tokens.prompt, result.tokens.completion) == fake.tokens(), fake.served
    assert result.session_id and harness.checkpoint.session_id == result.session_id
    assert ".gitignore" not in status(harness.worktree)


async def test_claude_may_run_the_ticket_test_command_and_nothing_else(
    harness: Harness, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under acceptEdits in -p mode every Bash call was denied: the prompt's "run the tests" could not be
    followed and the run was blocked. The ticket's test command is allowed, other commands still not."""
    fake.script(Run("python -m pytest --version"), Run("curl https://example.com"))
    result = await run_real(harness, "claude", fake, monkeypatch)

    first, second = tool_results(fake)
    assert "requires approval" not in first, first
    assert "requires approval" in second or "permission" in second.lower(), second
    assert result.outcome == "blocked" and "Bash" in result.reason, result


LIMITS = {
    "claude": Failure("usage_limit", reset_in=3600),
    "codex": Failure("usage_limit", reset_in=3600),
    "gemini": Failure("daily_quota"),
}


@pytest.mark.parametrize("kind", sorted(LIMITS))
async def test_a_usage_limit_then_the_same_session_resumes_with_tokens_counted_once(
    harness: Harness, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Claude on the subscription path (rate_limit_event), Codex's "You\u2019ve hit your usage limit",
    Gemini's daily quota: usage_limit with a reset; the resumed run continues the session the model
    answered in, and the tokens of both runs add up to what the API reported (Codex reports the thread's
    running total)."""
    oauth = kind == "claude"
    fake.script(Edit("notes/a.txt", "a\n"), LIMITS[kind])
    first = await run_real(harness, kind, fake, monkeypatch, oauth=oauth)
    assert first.outcome == "usage_limit" and first.reset_at is not None, (first, harness.lines[-10:])
    assert first.provider == {"claude": "anthropic", "codex": "gateway", "gemini": "google"}[kind]

    fake.script(Say("Continued and finished."))
    second = await run_real(harness, kind, fake, monkeypatch, oauth=oauth, resume=True)

    assert second.outcome == "done", (second, harness.lines[-10:])
    assert second.session_id == first.session_id
    assert any(f"resuming session {first.session_id}" in line for line in harness.lines)
    prompt, completion = fake.tokens()
    assert first.tokens.prompt + second.tokens.prompt == prompt
    assert first.tokens.completion + second.tokens.completion == completion


@pytest.mark.parametrize("kind", ["codex", "aider"])
async def test_a_finished_session_resumed_for_the_next_iteration_counts_only_new_tokens(
    harness: Harness, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Codex's turn.completed.usage is the thread's running total: a resumed thread counted earlier runs
    again on every resume. aider resumes through its restored chat history."""
    fake.script(Edit("notes/a.txt", "a\n"))
    first = await run_real(harness, kind, fake, monkeypatch)
    fake.script(Edit("notes/b.txt", "b\n"))
    second = await run_real(harness, kind, fake, monkeypatch, resume=True)

    assert (first.outcome, second.outcome) == ("done", "done"), (first, second)
    assert any("resuming session" in line for line in harness.lines)
    prompt, completion = fake.tokens()
    assert (
        first.tokens.prompt + second.tokens.prompt,
        first.tokens.completion + second.tokens.completion,
    ) == (
        prompt,
        completion,
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_the_clis_own_retries_that_recover_end_done(
    harness: Harness, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A 429 with a short Retry-After, retried by the CLI itself (Codex: "Reconnecting... 1/1"), then the
    edit: done, not rate_limited."""
    fake.script(Failure("rate_limit", retry_after=1), Edit("notes/late.txt", "late\n"))
    extra = codex_provider_args(fake.url, retries=1) if kind == "codex" else []
    result = await run_real(harness, kind, fake, monkeypatch, extra_args=extra)

    assert result.outcome == "done", (result, harness.lines[-15:])
    assert (harness.worktree / "notes" / "late.txt").exists()
    assert fake.agent_calls()[0].status == 429
    if kind == "claude":
        assert any(line.startswith("[retry] Claude retries") for line in harness.lines)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_wrong_key_blocks_with_a_readable_message(
    harness: Harness, fake: ModelAPIs, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await run_real(harness, kind, fake, monkeypatch, key="sk-wrong-key-0000000000")

    error = caught.value
    assert error.type == "AgentAuthFailed" and error.non_retryable, error
    assert "key" in error.message.lower() and "pass_env" in error.message
    assert "{" not in error.message and "request id" not in error.message, error.message

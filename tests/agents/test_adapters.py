"""Each CLI adapter against a fake CLI that prints that agent's real stream: one outcome per scenario."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from activities.agents import AGENT_KINDS
from tests.agents.conftest import SESSION, Harness, fake_config
from workflows.contracts import AgentResult

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def run_fake(
    harness: Harness, kind: str, scenario: str, mp: pytest.MonkeyPatch, **kw: object
) -> AgentResult:
    mp.setenv("FAKE_AGENT_SCENARIO", scenario)
    agent = AGENT_KINDS[kind](kind, fake_config(kind))
    return await agent.run(harness.agent_run(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "session", "prompt", "completion", "cost"),
    [
        ("claude", SESSION, 150, 45, 0.0123),
        ("codex", "0199a213-81c0-7800-8aa1-bbab2a035a53", 24763, 122, 0.0),
        ("gemini", "5e6f7a8b-0000-4000-8000-000000000001", 1200, 300, 0.0),
        ("aider", "aider-chat-history", 2500, 120, 0.0012),
    ],
)
async def test_success_is_done_with_steps_tokens_and_session(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    session: str,
    prompt: int,
    completion: int,
    cost: float,
) -> None:
    result = await run_fake(harness, kind, "success", monkeypatch)

    assert result.outcome == "done", result
    assert result.session_id == session and harness.checkpoint.session_id == session
    assert (result.tokens.prompt, result.tokens.completion) == (prompt, completion)
    assert result.tokens.cost_usd == pytest.approx(cost)
    assert (len(harness.steps) == 1 and f"notes/{kind}.txt" in harness.steps[0]) or kind == "gemini"
    assert (harness.worktree / "notes" / f"{kind}.txt").exists()
    assert harness.lines, "progress lines reach the attempt log"
    if kind != "aider":
        assert harness.events(), "raw events are kept as JSON lines"


LIMITS = [
    ("claude", "usage_limit", "usage_limit"),
    ("codex", "usage_limit", "usage_limit"),
    ("gemini", "usage_limit", "usage_limit"),
    ("claude", "rate_limit", "rate_limited"),
    ("codex", "rate_limit", "rate_limited"),
    ("gemini", "rate_limit", "rate_limited"),
    ("aider", "rate_limit", "rate_limited"),
    ("claude", "max_turns", "blocked"),
    ("gemini", "max_turns", "blocked"),
    ("claude", "question", "blocked"),
    ("codex", "question", "blocked"),
    ("gemini", "question", "blocked"),
    ("aider", "question", "blocked"),
]


@pytest.mark.parametrize(("kind", "scenario", "outcome"), LIMITS, ids=[f"{k}-{s}" for k, s, _ in LIMITS])
async def test_each_scenario_maps_to_one_outcome(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str, scenario: str, outcome: str
) -> None:
    monkeypatch.setenv("FAKE_AGENT_RESET_IN", "3600")
    before = datetime.now(UTC)
    result = await run_fake(harness, kind, scenario, monkeypatch)

    assert result.outcome == outcome, result
    assert result.reason
    if outcome == "usage_limit":
        assert result.reset_at is not None
        if kind == "gemini":  # a daily quota: next midnight Pacific
            assert before < result.reset_at <= before + timedelta(hours=24)
        else:  # codex prints minutes only, so up to a minute earlier
            assert before + timedelta(minutes=58) <= result.reset_at <= before + timedelta(minutes=62)
    if scenario == "max_turns":
        assert "max_turns" in result.reason
    expected_retry = {"codex": 20.0, "gemini": 34.07}.get(kind)
    if outcome == "rate_limited" and expected_retry:
        assert result.retry_after_seconds == pytest.approx(expected_retry)


@pytest.mark.parametrize("kind", ["claude", "codex", "gemini", "aider"])
async def test_auth_failure_is_a_non_retryable_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await run_fake(harness, kind, "auth", monkeypatch)
    assert caught.value.type == "AgentAuthFailed" and caught.value.non_retryable
    assert "pass_env" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "fresh", "resumed"),
    [
        ("claude", ["--session-id", SESSION], ["--resume", SESSION]),
        ("codex", [], ["resume", "0199a213-81c0-7800-8aa1-bbab2a035a53"]),
        ("gemini", [], ["-r", "5e6f7a8b-0000-4000-8000-000000000001"]),
        ("aider", [], ["--restore-chat-history"]),
    ],
)
async def test_a_session_is_resumed_only_once_the_cli_can_resume_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str, fresh: list[str], resumed: list[str]
) -> None:
    """A usage limit on the first model call: Claude has saved the session already (--resume works, as
    the real CLI shows); Codex, Gemini and aider have nothing to resume (Gemini 0.61 fails "No previous
    sessions found", exit 42, on every retry), so the next run starts fresh and says so."""
    first = await run_fake(harness, kind, "usage_limit_once", monkeypatch)
    second = await run_fake(harness, kind, "usage_limit_once", monkeypatch, resume=True)

    assert first.outcome in ("usage_limit", "blocked") and second.outcome == "done", (first, second)
    argv_first, argv_second = harness.argvs()
    assert _contains(argv_first, fresh) and not _contains(argv_first, resumed)
    if kind == "claude":
        assert _contains(argv_second, resumed)
        assert first.session_id == second.session_id
    else:
        assert not _contains(argv_second, resumed)
        assert any("no earlier" in line and "starting fresh" in line for line in harness.lines)


def _contains(argv: list[str], part: list[str]) -> bool:
    return any(argv[i : i + len(part)] == part for i in range(len(argv) - len(part) + 1))


async def test_stall_and_timeout_have_clear_reasons(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AGENT_SILENCE", "20")
    stalled = await run_fake(harness, "aider", "silent", monkeypatch, stall=1.0)
    assert stalled.outcome == "failed" and stalled.reason == "aider printed nothing for 1 s"

    timed_out = await run_fake(harness, "claude", "silent", monkeypatch, timeout=1.5)
    assert timed_out.outcome == "failed"
    assert timed_out.reason == "claude ran past its execution timeout (1.5 s)"

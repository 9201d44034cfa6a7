"""What the real CLIs printed (tests/agents/recorded/), replayed through their adapters: each recording
is one outcome, with the reset, delay, tokens and message a ticket needs.

Every case here is a mismatch the real CLIs showed (issue #14) or a format they really print; the old
adapters got the ones marked "was" wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from temporalio.exceptions import ApplicationError

from activities.agents import AGENT_KINDS
from activities.settings import AgentConfig
from tests.agents.conftest import Harness
from workflows.contracts import AgentResult

pytestmark = pytest.mark.asyncio(loop_scope="session")

RECORDED = Path(__file__).resolve().parent / "recorded"
REPLAY = Path(__file__).resolve().parents[1] / "fakes" / "agent_streams" / "replay.py"


async def replay(
    harness: Harness, mp: pytest.MonkeyPatch, kind: str, name: str, exit_code: int
) -> AgentResult:
    mp.setenv("REPLAY_FILE", str(RECORDED / kind / f"{name}.out"))
    mp.setenv("REPLAY_EXIT", str(exit_code))
    config = AgentConfig(
        kind=kind,
        binary=str(REPLAY),
        pass_env=["REPLAY_FILE", "REPLAY_EXIT"],
        sandbox="off",
        model="openai/gpt-4o" if kind == "aider" else None,
    )
    return await AGENT_KINDS[kind](kind, config).run(harness.agent_run())


def next_pacific_midnight(now: datetime) -> datetime:
    here = now.astimezone(ZoneInfo("America/Los_Angeles"))
    return datetime.combine(here.date() + timedelta(days=1), time(0), tzinfo=here.tzinfo).astimezone(UTC)


DONE = [
    ("claude", "edit", 1, (220, 50)),
    ("claude", "rate_then_edit", 1, (220, 50)),  # a system/api_retry first: logged, not an outcome
    ("claude", "over_then_edit", 1, (220, 50)),
    ("codex", "over_then_edit-retries", 1, (220, 50)),
    ("codex", "rate_then_edit-retries", 1, (220, 50)),  # was rate_limited: "Reconnecting... 1/2 (...429...)"
    ("gemini", "rate_then_edit", 1, (220, 50)),  # "Attempt 1 failed: ... Retrying after 5889ms"
    ("aider", "edit", 1, (120, 30)),
    ("aider", "rate_then_edit", 1, (120, 30)),
]


@pytest.mark.parametrize(("kind", "name", "steps", "tokens"), DONE, ids=[f"{k}-{n}" for k, n, *_ in DONE])
async def test_runs_that_recover_from_their_own_retries_are_done(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    name: str,
    steps: int,
    tokens: tuple[int, int],
) -> None:
    result = await replay(harness, monkeypatch, kind, name, 0)

    assert result.outcome == "done", result
    assert len(harness.steps) == steps and "notes/x.txt" in harness.steps[0], harness.steps
    assert (result.tokens.prompt, result.tokens.completion) == tokens
    assert result.provider is None  # limit info only with a limit
    if name == "rate_then_edit" and kind == "claude":
        assert any(
            line.startswith("[retry] Claude retries in 1.0 s") and "429" in line for line in harness.lines
        )


async def test_codex_usage_limit_with_a_typographic_apostrophe_is_a_usage_limit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was `failed`: "You\u2019ve hit your usage limit. ... try again at 7:48 PM." (a typographic U+2019)."""
    assert "\u2019ve hit your usage limit" in (RECORDED / "codex" / "usage.out").read_text()
    before = datetime.now(UTC)
    result = await replay(harness, monkeypatch, "codex", "usage", 1)

    assert result.outcome == "usage_limit", result
    assert result.reset_at is not None and before < result.reset_at <= before + timedelta(hours=24)
    assert result.reset_at.astimezone().strftime("%-I:%M %p") == "7:48 PM"
    assert result.provider == "openai"


@pytest.mark.parametrize("name", ["daily_quota", "usage"])
async def test_gemini_daily_quota_waits_until_midnight_pacific(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Was `failed`: error type "unknown", "You have exhausted your daily quota on this model", exit 173."""
    now = datetime.now(UTC)
    result = await replay(harness, monkeypatch, "gemini", name, 173)

    assert result.outcome == "usage_limit", result
    assert result.reset_at == next_pacific_midnight(now)
    assert "exhausted your daily quota" in result.reason and "{" not in result.reason
    assert result.provider == "google"


@pytest.mark.parametrize(
    ("kind", "name", "exit_code"),
    [
        ("claude", "credit_balance", 1),  # was failed: "Credit balance is too low"
        ("codex", "insufficient_quota", 1),  # "Quota exceeded. Check your plan and billing details."
        ("aider", "insufficient_quota-final", 0),  # was rate_limited (retried every 30 s): a RateLimitError
    ],
)
async def test_no_credits_is_a_usage_limit_with_an_unknown_reset(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str, name: str, exit_code: int
) -> None:
    result = await replay(harness, monkeypatch, kind, name, exit_code)

    assert result.outcome == "usage_limit", result
    assert result.reset_at is None  # the workflow waits its default hour and probes
    assert result.provider == {"claude": "anthropic", "codex": "openai", "aider": "openai"}[kind]


async def test_claude_usage_limit_on_the_subscription_path_has_its_reset(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await replay(harness, monkeypatch, "claude", "usage-oauth", 1)

    assert result.outcome == "usage_limit", result
    assert result.reset_at == datetime.fromtimestamp(1796413680, tz=UTC)
    assert result.provider == "anthropic"


@pytest.mark.parametrize(
    ("kind", "name", "exit_code", "retry_after"),
    [
        ("claude", "usage", 1, None),  # API-key path: "API Error: Request rejected (429) · ..."
        ("codex", "rate", 1, None),
        ("codex", "rate-retries", 1, None),  # two "Reconnecting..." notices, then the final error
        ("aider", "rate-final", 0, 20.0),  # was: "try again in 20s" wrapped onto aider's next line
    ],
)
async def test_final_rate_limits_are_rate_limited_with_their_delay(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    name: str,
    exit_code: int,
    retry_after: float | None,
) -> None:
    result = await replay(harness, monkeypatch, kind, name, exit_code)

    assert result.outcome == "rate_limited", result
    assert result.retry_after_seconds == retry_after
    assert result.provider is not None


@pytest.mark.parametrize("name", ["rate", "insufficient_quota"])
async def test_aider_retrying_and_then_answering_without_an_edit_is_blocked_not_limited(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Was rate_limited: "Retrying in 0.2 seconds..." is aider's own retry, and the model answered."""
    result = await replay(harness, monkeypatch, "aider", name, 0)

    assert result.outcome == "blocked", result
    assert "after retrying" in result.reason


@pytest.mark.parametrize(
    ("kind", "name", "exit_code", "message"),
    [
        ("claude", "auth", 1, "Invalid API key · Fix external API key"),
        ("codex", "auth", 1, "unexpected status 401 Unauthorized: Incorrect API key provided: sk-wrong."),
        ("gemini", "auth", 144, "API key not valid. Please pass a valid API key."),  # was raw JSON
        ("aider", "auth", 0, "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect"),
    ],
)
async def test_auth_failures_block_with_a_readable_message(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, kind: str, name: str, exit_code: int, message: str
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await replay(harness, monkeypatch, kind, name, exit_code)

    assert caught.value.type == "AgentAuthFailed" and caught.value.non_retryable
    assert message in caught.value.message, caught.value.message
    assert '{"error"' not in caught.value.message and "request id" not in caught.value.message


async def test_gemini_blocked_line_is_a_question(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    result = await replay(harness, monkeypatch, "gemini", "question", 0)

    assert result.outcome == "blocked" and result.reason == "Which rounding mode?"


async def test_claude_bash_denied_under_accept_edits_is_blocked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the real CLI does without --allowedTools: Bash "requires approval" and the run is blocked.
    The adapter now allows the ticket's test command (test_real_clis: the tests run)."""
    result = await replay(harness, monkeypatch, "claude", "run", 0)

    assert result.outcome == "blocked" and "Bash" in result.reason

"""The open_pr activity end to end: a real worktree, a real push, a real PR record (or our GitHub)."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from activities import secrets_scan
from activities.githosts.local import PULLS_DIR
from activities.pull_request import PullRequestActivities
from activities.settings import RepoConfig, Settings
from tests.fakes.githost_server import FakeGitHub, serve_github
from tests.fakes.repos import (
    add_worktree,
    clone,
    commit_file,
    make_remote,
    rev_parse,
    run_git,
)
from workflows.contracts import (
    CheckReport,
    Classification,
    PullRequestRequest,
    Ticket,
    Workspace,
)

TOKEN = "ghs_activityTestToken0123456789abcdef"


@dataclass
class Layout:
    remote: Path
    worktree: Path
    base_commit: str
    ticket: Ticket


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    remote = make_remote(tmp_path / "hosted")
    repo = clone(remote, tmp_path / "clone")
    # The token in the ticket text stands for any secret that reaches the body; it must come out masked.
    ticket = Ticket(
        id="T-7",
        title="Add greeting",
        body=f"Please add a greeting.\nleaked {TOKEN}",
        repo=str(remote),
        labels=["agent"],
    )
    base = add_worktree(repo, tmp_path / "wt", ticket.branch)
    commit_file(tmp_path / "wt", "hello.py", "print('hi')\n", "add greeting")
    return Layout(remote, tmp_path / "wt", base, ticket)


def request(lay: Layout, ticket: Ticket | None = None) -> PullRequestRequest:
    ticket = ticket or lay.ticket
    workspace = Workspace(
        path=str(lay.worktree),
        branch=ticket.branch,
        base_branch="main",
        base_commit=lay.base_commit,
        repo_url=str(lay.remote),
        host_queue="q",
    )
    checks = CheckReport(passed=True, command="pytest -q", exit_code=0, passed_count=12, failed_count=0)
    return PullRequestRequest(
        ticket=ticket,
        workspace=workspace,
        classification=Classification(),
        checks=checks,
        models_used=["qwen2.5-coder:7b"],
        iterations=2,
        workflow_id="ticket-T-7",
    )


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(state_dir=tmp_path / "state", github_token=SecretStr(TOKEN), **extra)


async def run(acts: PullRequestActivities, req: PullRequestRequest, beats: list[Any] | None = None) -> Any:
    env = ActivityEnvironment()
    if beats is not None:
        env.on_heartbeat = lambda *details: beats.append(details)
    return await env.run(acts.open_pr, req)


def records(remote: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((remote / PULLS_DIR).glob("*.json"))]


# ----------------------------------------------------------------------------------------- local host


def pushed(lay: Layout) -> str:
    return rev_parse(lay.remote, f"refs/heads/{lay.ticket.branch}")


def assert_squashed(lay: Layout) -> str:
    """The remote branch is one commit: HEAD's tree on the base, ticketflow's message and identity."""
    tip = pushed(lay)
    assert run_git(lay.remote, "rev-parse", f"{tip}^{{tree}}").strip() == rev_parse(
        lay.worktree, "HEAD^{tree}"
    )
    assert run_git(lay.remote, "rev-list", "--parents", "-n", "1", tip).split() == [tip, lay.base_commit]
    message = run_git(lay.remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%B", tip)
    assert message.startswith("ticketflow <ticketflow@localhost>|ticketflow <ticketflow@localhost>|")
    assert message.split("|", 2)[2].strip() == f"{lay.ticket.title}\n\nTicket: {lay.ticket.id}"
    return tip


async def test_pushes_branch_and_opens_pr(layout: Layout, tmp_path: Path) -> None:
    beats: list[Any] = []
    commit_file(layout.worktree, "later.py", "x = 1\n", "wip: step 2")  # checkpoints: two local commits
    ref = await run(PullRequestActivities(settings(tmp_path)), request(layout), beats)

    tip = assert_squashed(layout)
    # The checkpoint commits stay local: not on the remote, under any ref or as loose objects.
    for checkpoint in run_git(layout.worktree, "rev-list", f"{layout.base_commit}..HEAD").split():
        assert subprocess.run(["git", "-C", str(layout.remote), "cat-file", "-e", checkpoint]).returncode != 0
    assert (ref.number, ref.created, ref.head_commit, ref.host) == (1, True, tip, "local")
    [record] = records(layout.remote)
    assert record["head"] == layout.ticket.branch and record["labels"] == ["agent"] and not record["draft"]
    body = record["body"]
    assert "Command: `pytest -q`" in body and "**passed**" in body and "12 passed" in body
    assert "http://localhost:8233/namespaces/default/workflows/ticket-T-7" in body
    assert "Ticket: T-7" in body
    assert TOKEN not in json.dumps(record) and "leaked ***" in body
    assert ("open",) in beats


async def test_second_call_returns_the_same_pr(layout: Layout, tmp_path: Path) -> None:
    run_git(layout.remote, "config", "core.logAllRefUpdates", "always")
    acts = PullRequestActivities(settings(tmp_path))
    first = await run(acts, request(layout))
    tip = pushed(layout)
    pushes_before = reflog_length(layout.remote, layout.ticket.branch)
    again = await run(acts, request(layout))

    # A retry makes the very same squashed commit and pushes nothing.
    assert pushed(layout) == tip == again.head_commit
    assert reflog_length(layout.remote, layout.ticket.branch) == pushes_before
    assert (again.number, again.url, again.created) == (first.number, first.url, False)
    assert len(records(layout.remote)) == 1


async def test_new_commits_update_the_pushed_branch(layout: Layout, tmp_path: Path) -> None:
    acts = PullRequestActivities(settings(tmp_path))
    await run(acts, request(layout))
    # A resumed agent may rewrite its branch: amend instead of adding, so the push is not a fast-forward.
    first = pushed(layout)
    commit_file(layout.worktree, "hello.py", "print('hello')\n", "wip: reworded greeting")
    ref = await run(acts, request(layout))

    assert pushed(layout) != first and assert_squashed(layout) == ref.head_commit
    assert (ref.number, ref.created) == (1, False)


async def test_a_secret_in_what_would_be_pushed_is_refused(layout: Layout, tmp_path: Path) -> None:
    key = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    commit_file(layout.worktree, "deploy.env", f"AWS_SECRET_ACCESS_KEY={key}\n", "wip: deploy")
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(settings(tmp_path)), request(layout))

    assert (err.value.type, err.value.non_retryable) == ("SecretsInPush", True)
    assert "deploy.env:1" in str(err.value) and key not in str(err.value)
    assert run_git(layout.remote, "branch", "--list", layout.ticket.branch).strip() == ""
    assert not (layout.remote / PULLS_DIR).exists()


async def test_a_secret_in_the_title_never_reaches_the_pushed_message(layout: Layout, tmp_path: Path) -> None:
    ticket = layout.ticket.model_copy(update={"title": f"Rotate {TOKEN} now"})
    req = request(layout, ticket)
    req.workspace.branch = layout.ticket.branch  # the worktree's branch, named before the title changed
    await run(PullRequestActivities(settings(tmp_path)), req)
    message = run_git(layout.remote, "log", "-1", "--format=%B", pushed(layout))
    assert TOKEN not in message and message.startswith("Rotate *** now")


async def test_a_failing_scan_refuses_the_push(
    layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(diff: str) -> list[Any]:
        raise ValueError("unparsable")

    monkeypatch.setattr(secrets_scan, "scan_diff", broken)
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(settings(tmp_path)), request(layout))
    assert (err.value.type, err.value.non_retryable) == ("SecretsInPush", True)
    assert "scan failed" in str(err.value)
    assert run_git(layout.remote, "branch", "--list", layout.ticket.branch).strip() == ""


def reflog_length(bare: Path, branch: str) -> int:
    """How many times the branch was updated (the test turns on core.logAllRefUpdates on the remote)."""
    return len(run_git(bare, "reflog", "show", f"refs/heads/{branch}").splitlines())


async def test_nothing_to_push_is_final(layout: Layout, tmp_path: Path) -> None:
    run_git(layout.worktree, "reset", "-q", "--hard", layout.base_commit)
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(settings(tmp_path)), request(layout))
    assert (err.value.type, err.value.non_retryable) == ("NothingToPush", True)
    assert not (layout.remote / PULLS_DIR).exists()


async def test_unknown_repo_is_final(layout: Layout, tmp_path: Path) -> None:
    req = request(layout, layout.ticket.model_copy(update={"repo": "no-such-repo"}))
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(settings(tmp_path)), req)
    assert (err.value.type, err.value.non_retryable) == ("RepoNotFound", True)


async def test_failing_checks_open_a_draft(layout: Layout, tmp_path: Path) -> None:
    req = request(layout)
    req.checks = CheckReport(
        passed=False, command="pytest -q", exit_code=1, failed_count=2, output_tail="E   assert 1 == 2"
    )
    await run(PullRequestActivities(settings(tmp_path)), req)

    [record] = records(layout.remote)
    assert record["draft"] and "**FAILED**" in record["body"] and "assert 1 == 2" in record["body"]


# --------------------------------------------------------------------------------------- github host


@pytest.fixture
def github(layout: Layout, tmp_path: Path) -> Iterator[tuple[FakeGitHub, Settings, PullRequestRequest]]:
    with serve_github(TOKEN) as fake:
        # The hosted repo is still the local bare repo (git pushes there); PRs go to our GitHub.
        repo = RepoConfig(url=str(layout.remote), host="github", github_repo="acme/widgets", api_url=fake.url)
        ticket = layout.ticket.model_copy(update={"repo": "widgets"})
        yield fake, settings(tmp_path, repos={"widgets": repo}), request(layout, ticket)


async def test_github_pr_through_the_activity(
    github: tuple[FakeGitHub, Settings, PullRequestRequest],
) -> None:
    fake, cfg, req = github
    ref = await run(PullRequestActivities(cfg), req)

    assert (ref.url, ref.created, ref.host) == ("https://github.com/acme/widgets/pull/1", True, "github")
    [pull] = fake.pulls
    assert "Command: `pytest -q`" in pull["body"] and [lb["name"] for lb in pull["labels"]] == ["agent"]
    assert not any(TOKEN in r.body for r in fake.requests)
    assert (await run(PullRequestActivities(cfg), req)).created is False and len(fake.pulls) == 1


async def test_github_rate_limit_becomes_a_delayed_benign_retry(
    github: tuple[FakeGitHub, Settings, PullRequestRequest],
) -> None:
    fake, cfg, req = github
    fake.inject("secondary_rate_limit")
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(cfg), req)
    assert (err.value.type, err.value.non_retryable) == ("RateLimited", False)
    assert err.value.next_retry_delay == timedelta(seconds=7)
    assert err.value.category == ApplicationErrorCategory.BENIGN


async def test_github_bad_token_fails_for_good(
    github: tuple[FakeGitHub, Settings, PullRequestRequest],
) -> None:
    fake, cfg, req = github
    wrong = "ghs_wrongActivityToken0123456789abcd"
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(cfg.model_copy(update={"github_token": SecretStr(wrong)})), req)
    assert (err.value.type, err.value.non_retryable) == ("AuthFailed", True)
    assert wrong not in str(err.value) and TOKEN not in str(err.value)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {wrong}"


async def test_github_server_error_retries_on_policy(
    github: tuple[FakeGitHub, Settings, PullRequestRequest],
) -> None:
    fake, cfg, req = github
    fake.inject("server_error")
    with pytest.raises(ApplicationError) as err:
        await run(PullRequestActivities(cfg), req)
    assert (err.value.type, err.value.non_retryable, err.value.next_retry_delay) == (
        "HostUnavailable",
        False,
        None,
    )


async def test_github_reviewers_come_from_the_repo_config_and_a_refusal_keeps_the_pr(
    github: tuple[FakeGitHub, Settings, PullRequestRequest], caplog: pytest.LogCaptureFixture
) -> None:
    fake, cfg, req = github
    repo = cfg.repos["widgets"].model_copy(update={"reviewers": ["alice", "ticketflow-bot"]})
    acts = PullRequestActivities(cfg.model_copy(update={"repos": {"widgets": repo}}))
    with caplog.at_level(logging.WARNING):
        ref = await run(acts, req)
        again = await run(acts, req)  # a retried activity: same PR, the review asked for again

    assert (ref.created, again.created, again.number, len(fake.pulls)) == (True, False, 1, 1)
    assert [r["login"] for r in fake.pulls[0]["requested_reviewers"]] == ["alice"]
    assert fake.review_requests[0] == (1, ["alice", "ticketflow-bot"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("'ticketflow-bot'" in w and "pull request author" in w for w in warned)
    assert TOKEN not in caplog.text

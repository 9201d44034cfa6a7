"""One contract for every git host: idempotent PRs, labels, and errors Temporal can act on.

The local host runs against a real bare repository; GitHub, GitLab and Gitea against our own REST
servers on 127.0.0.1 (tests/fakes/githost_server.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from activities.githosts import HOSTS, GitHost, GitHostError, PullRequestSpec, git_host_for
from activities.githosts.base import TOKEN_ENV, error_for_status, rate_limit_wait
from activities.githosts.gitea import GiteaHost
from activities.githosts.github import GitHubHost, owner_repo_from_url
from activities.githosts.gitlab import GitLabHost, api_url_from_repo_url, project_path_from_url
from activities.githosts.local import PULLS_DIR, LocalHost
from activities.githosts.rest import RestHost
from activities.repos import ResolvedRepo, git_env, resolve_repo
from activities.settings import RepoConfig, Settings
from tests.fakes.githost_server import FakeGitHub, FakeHost, serve_gitea, serve_github, serve_gitlab
from tests.fakes.repos import create_branch, make_remote

TOKEN = "ghs_contractTestToken0123456789abcdef"


@dataclass
class HostCase:
    host: GitHost
    push_branch: Callable[[str], None]
    count_prs: Callable[[], int]
    labels_of: Callable[[int], list[str]]
    fake: FakeHost | None = None


def _local_case(tmp_path: Path) -> HostCase:
    bare = make_remote(tmp_path)

    def records() -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in (bare / PULLS_DIR).glob("*.json")]

    def labels_of(number: int) -> list[str]:
        return next(list(r["labels"]) for r in records() if r["number"] == number)

    def push_branch(branch: str) -> None:
        create_branch(bare, branch)

    return HostCase(LocalHost(str(bare)), push_branch, lambda: len(records()), labels_of)


def _label_names(labels: list[Any]) -> list[str]:
    return [str(label["name"]) if isinstance(label, dict) else str(label) for label in labels]


@contextmanager
def _rest_case(kind: str) -> Iterator[HostCase]:
    token = SecretStr(TOKEN)
    server = {"github": serve_github, "gitlab": serve_gitlab, "gitea": serve_gitea}[kind]
    with server(TOKEN, retry_after=3) as fake:
        host: GitHost
        if kind == "github":
            host = GitHubHost(fake.url, "acme/widgets", token, repo_url="https://github.com/acme/widgets")
        elif kind == "gitlab":
            host = GitLabHost(
                f"{fake.url}/api/v4", "acme/widgets", token, repo_url="https://gl.example/acme/w"
            )
        else:
            host = GiteaHost(
                f"{fake.url}/api/v1", "acme/widgets", token, repo_url="https://gt.example/acme/w"
            )

        def labels_of(number: int) -> list[str]:
            return _label_names(fake.pulls[number - 1]["labels"])

        yield HostCase(host, lambda _b: None, lambda: len(fake.pulls), labels_of, fake)


@pytest.fixture(params=["local", "github", "gitlab", "gitea"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HostCase]:
    if request.param == "local":
        yield _local_case(tmp_path)
        return
    with _rest_case(request.param) as rest:
        yield rest


@pytest.fixture(params=["github", "gitlab", "gitea"])
def rest_case(request: pytest.FixtureRequest) -> Iterator[HostCase]:
    """The hosts behind an HTTP API: rate limits and server errors exist only there."""
    with _rest_case(request.param) as rest:
        yield rest


def spec(head: str = "ticketflow/T-1-fix", labels: tuple[str, ...] = ()) -> PullRequestSpec:
    return PullRequestSpec(title="Fix it", body="Body", head=head, base="main", labels=labels)


# ------------------------------------------------------------------------------------------- contract


async def test_open_creates_then_find_returns_it(case: HostCase) -> None:
    case.push_branch("ticketflow/T-1-fix")
    assert await case.host.find_open_pr("ticketflow/T-1-fix", "main") is None

    ref = await case.host.open_pr(spec())

    assert (ref.created, ref.number, ref.branch, ref.host) == (True, 1, "ticketflow/T-1-fix", case.host.name)
    found = await case.host.find_open_pr("ticketflow/T-1-fix", "main")
    assert found is not None and (found.number, found.url, found.created) == (1, ref.url, False)


async def test_second_open_returns_same_pr(case: HostCase) -> None:
    case.push_branch("ticketflow/T-1-fix")
    first = await case.host.open_pr(spec())
    again = await case.host.open_pr(spec())

    assert (again.number, again.url, again.created) == (first.number, first.url, False)
    assert case.count_prs() == 1


async def test_concurrent_opens_of_one_branch_make_one_pr(case: HostCase) -> None:
    case.push_branch("ticketflow/T-1-fix")
    refs = await asyncio.gather(*(case.host.open_pr(spec()) for _ in range(4)))

    assert {r.number for r in refs} == {1}
    assert sum(r.created for r in refs) == 1
    assert case.count_prs() == 1


async def test_concurrent_tickets_get_distinct_numbers(case: HostCase) -> None:
    branches = [f"ticketflow/T-{i}-x" for i in range(6)]
    for branch in branches:
        case.push_branch(branch)
    refs = await asyncio.gather(*(case.host.open_pr(spec(b)) for b in branches))

    assert sorted(r.number for r in refs) == list(range(1, 7))
    assert {r.branch for r in refs} == set(branches)


async def test_labels_are_applied(case: HostCase) -> None:
    case.push_branch("ticketflow/T-1-fix")
    ref = await case.host.open_pr(spec(labels=("bug", "agent")))

    assert sorted(case.labels_of(ref.number)) == ["agent", "bug"]


async def test_retried_open_after_a_lost_reply_makes_no_second_pr(case: HostCase) -> None:
    """An attempt created the PR but its reply was lost; the retry's lookup lags, so it meets the
    host's duplicate error (GitHub 422, GitLab 409, Gitea 409) and must return the first PR."""
    case.push_branch("ticketflow/T-1-fix")
    first = await case.host.open_pr(spec(labels=("agent",)))
    if case.fake is not None:
        case.fake.inject("stale_list")

    retried = await case.host.open_pr(spec(labels=("agent",)))

    assert (retried.number, retried.url, retried.created) == (first.number, first.url, False)
    assert case.count_prs() == 1
    assert case.labels_of(first.number) == ["agent"]


async def test_rate_limit_is_retryable_with_a_wait(rest_case: HostCase) -> None:
    case = rest_case
    assert case.fake is not None
    case.fake.inject("secondary_rate_limit")
    with pytest.raises(GitHostError) as err:
        await case.host.open_pr(spec())
    assert (err.value.kind, err.value.retryable, err.value.retry_after) == ("rate_limit", True, 3.0)
    assert case.count_prs() == 0


async def test_server_error_is_retryable_and_passes(rest_case: HostCase) -> None:
    case = rest_case
    assert case.fake is not None
    case.fake.inject("server_error")
    with pytest.raises(GitHostError) as err:
        await case.host.open_pr(spec())
    assert (err.value.kind, err.value.retryable) == ("unavailable", True)
    assert (await case.host.open_pr(spec())).created


async def test_draft_is_marked(case: HostCase) -> None:
    case.push_branch("ticketflow/T-1-fix")
    draft = PullRequestSpec(title="Fix it", body="B", head="ticketflow/T-1-fix", base="main", draft=True)
    ref = await case.host.open_pr(draft)
    if case.fake is None:
        return  # the local host records the flag only
    pull = case.fake.pulls[ref.number - 1]
    assert pull.get("draft") is True or str(pull["title"]).startswith("WIP: ")


# -------------------------------------------------------------------------------------- local only


async def test_local_refuses_a_branch_the_remote_lacks(tmp_path: Path) -> None:
    host = LocalHost(str(make_remote(tmp_path)))
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec("never-pushed"))
    assert (err.value.kind, err.value.retryable) == ("rejected", False)


async def test_local_records_head_commit_and_file_url(tmp_path: Path) -> None:
    bare = make_remote(tmp_path)
    tip = create_branch(bare, "feature")
    ref = await LocalHost(f"file://{bare}").open_pr(spec("feature"))

    record = json.loads((bare / PULLS_DIR / "1.json").read_text())
    assert ref.url == f"file://{bare}#pull/1" and ref.head_commit == tip
    assert record["head_commit"] == tip and record["state"] == "open" and record["base"] == "main"
    assert LocalHost(str(bare)).push_env() == {}


# ------------------------------------------------------------------------------------- github only


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, GitHubHost]]:
    with serve_github(TOKEN) as fake:
        yield (
            fake,
            GitHubHost(fake.url, "acme/widgets", SecretStr(TOKEN), repo_url="https://github.com/acme/x"),
        )


async def test_github_422_already_exists_means_find(github: tuple[FakeGitHub, GitHubHost]) -> None:
    fake, host = github
    first = await host.open_pr(spec())
    fake.inject("stale_list")  # the lookup misses, so the create call meets GitHub's 422

    again = await host.open_pr(spec())

    assert (again.number, again.created) == (first.number, False)
    assert len(fake.pulls) == 1
    assert [(r.method, r.path.split("?")[0]) for r in fake.requests[-3:]] == [
        ("GET", "/repos/acme/widgets/pulls"),
        ("POST", "/repos/acme/widgets/pulls"),
        ("GET", "/repos/acme/widgets/pulls"),
    ]


async def test_github_sends_token_only_in_the_authorization_header(
    github: tuple[FakeGitHub, GitHubHost],
) -> None:
    fake, host = github
    await host.open_pr(spec(labels=("bug",)))

    assert fake.requests and all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)
    assert all(r.headers["x-github-api-version"] == "2022-11-28" for r in fake.requests)
    assert all(r.headers["accept"] == "application/vnd.github+json" for r in fake.requests)
    assert not any(TOKEN in r.body or TOKEN in r.path for r in fake.requests)
    assert (
        fake.requests[0].path
        == "/repos/acme/widgets/pulls?head=acme%3Aticketflow%2FT-1-fix&base=main&state=open"
    )


async def test_github_secondary_rate_limit_uses_retry_after(github: tuple[FakeGitHub, GitHubHost]) -> None:
    fake, host = github
    fake.inject("secondary_rate_limit")
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec())
    assert (err.value.kind, err.value.retryable, err.value.retry_after) == ("rate_limit", True, 7.0)


async def test_github_primary_rate_limit_waits_until_reset(github: tuple[FakeGitHub, GitHubHost]) -> None:
    fake, host = github
    fake.inject("primary_rate_limit")
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec())
    assert err.value.kind == "rate_limit" and err.value.retryable
    assert err.value.retry_after is not None and 35 <= err.value.retry_after <= 43


async def test_github_server_error_is_retryable(github: tuple[FakeGitHub, GitHubHost]) -> None:
    fake, host = github
    fake.inject("server_error")
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec())
    assert (err.value.kind, err.value.retryable, err.value.retry_after) == ("unavailable", True, None)
    assert await host.open_pr(spec())  # the fault was one request only


async def test_github_bad_token_is_not_retryable(github: tuple[FakeGitHub, GitHubHost]) -> None:
    fake, _ = github
    wrong = "ghs_wrongToken0123456789abcdefghij"
    host = GitHubHost(fake.url, "acme/widgets", SecretStr(wrong))
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec())
    assert (err.value.kind, err.value.retryable) == ("auth", False)
    assert wrong not in str(err.value) and "Bad credentials" in str(err.value)


async def test_github_unreachable_is_retryable() -> None:
    host = GitHubHost("http://127.0.0.1:9", "acme/widgets", SecretStr(TOKEN))
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec())
    assert (err.value.kind, err.value.retryable) == ("unavailable", True)


# ------------------------------------------------------------------------------- push credentials


def _credential_fill(env: dict[str, str], host: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "credential", "fill"],
        input=f"protocol=https\nhost={host}\n\n",
        env=git_env(env),
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_github_push_env_answers_git_credential_fill_for_its_host_only() -> None:
    host = GitHubHost(
        "https://api.github.com",
        "acme/widgets",
        SecretStr(TOKEN),
        repo_url="https://github.com/acme/widgets.git",
    )
    env = host.push_env()

    assert env[TOKEN_ENV] == TOKEN
    assert not any(TOKEN in v for k, v in env.items() if k != TOKEN_ENV)  # only ever in the env var
    assert env["GIT_CONFIG_KEY_0"] == "credential.helper" and env["GIT_CONFIG_VALUE_0"] == ""
    assert env["GIT_CONFIG_KEY_1"] == "credential.https://github.com.helper"

    filled = _credential_fill(env, "github.com")
    assert filled.returncode == 0, filled.stderr
    assert "username=x-access-token" in filled.stdout.splitlines()
    assert f"password={TOKEN}" in filled.stdout.splitlines()

    elsewhere = _credential_fill(env, "evil.example.com")
    assert TOKEN not in elsewhere.stdout and elsewhere.returncode != 0


def test_github_push_env_is_empty_without_token_or_for_ssh() -> None:
    assert (
        GitHubHost("https://api.github.com", "a/b", None, repo_url="https://github.com/a/b").push_env() == {}
    )
    ssh = GitHubHost("https://api.github.com", "a/b", SecretStr(TOKEN), repo_url="git@github.com:a/b.git")
    assert ssh.push_env() == {}


# ---------------------------------------------------------------------------------- registry & rules


def test_registry_builds_hosts_from_repo_config(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", github_token=SecretStr(TOKEN))
    assert set(HOSTS) >= {"local", "github"}
    assert isinstance(git_host_for(ResolvedRepo(name="r", url=str(tmp_path)), settings), LocalHost)
    gh = git_host_for(ResolvedRepo(name="g", url="https://ghe.example/acme/w.git", host="github"), settings)
    assert isinstance(gh, GitHubHost) and gh.owner_repo == "acme/w"
    with pytest.raises(GitHostError):
        git_host_for(ResolvedRepo(name="x", url="u", host="bitbucket"), settings)
    gl = git_host_for(
        ResolvedRepo(name="l", url="git@gitlab.example:grp/sub/app.git", host="gitlab"), settings
    )
    assert isinstance(gl, GitLabHost) and (gl.api_url, gl.project) == (
        "https://gitlab.example/api/v4",
        "grp/sub/app",
    )
    gt = git_host_for(ResolvedRepo(name="t", url="http://gitea.local:3000/o/r.git", host="gitea"), settings)
    assert isinstance(gt, GiteaHost) and (gt.api_url, gt.owner_repo) == (
        "http://gitea.local:3000/api/v1",
        "o/r",
    )
    assert project_path_from_url("https://gitlab.com/a/b.git") == "a/b"
    assert api_url_from_repo_url("https://gitlab.com/a/b.git", "/api/v4") == "https://gitlab.com/api/v4"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/widgets.git", "acme/widgets"),
        ("git@github.com:acme/widgets.git", "acme/widgets"),
        ("https://github.com/acme/widgets/", "acme/widgets"),
    ],
)
def test_owner_repo_from_url(url: str, expected: str) -> None:
    assert owner_repo_from_url(url) == expected


def test_rate_limit_rules() -> None:
    assert rate_limit_wait(429, {"retry-after": "12"}, "") == 12.0
    assert (
        rate_limit_wait(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}, "", now=1000) == 100
    )
    assert rate_limit_wait(403, {}, "You have exceeded a secondary rate limit") == 60.0
    assert rate_limit_wait(429, {}, "") == 60.0
    assert rate_limit_wait(403, {"x-ratelimit-remaining": "17"}, "Resource not accessible") is None
    assert rate_limit_wait(500, {"retry-after": "3"}, "") is None


def test_status_classification() -> None:
    assert error_for_status(401, {}, "Bad credentials").kind == "auth"
    assert error_for_status(403, {}, "Resource not accessible by integration").kind == "auth"
    assert error_for_status(502, {}, "Bad Gateway").retryable
    rejected = error_for_status(422, {}, "Validation Failed")
    assert (rejected.kind, rejected.retryable) == ("rejected", False)


# ------------------------------------------------------------------------------- gitlab and gitea


async def test_gitlab_speaks_private_token_and_understands_409_message_arrays() -> None:
    with serve_gitlab(TOKEN) as fake:
        host = GitLabHost(f"{fake.url}/api/v4", "acme/widgets", SecretStr(TOKEN), reviewer_ids=(7,))
        first = await host.open_pr(spec(labels=("bug",)))
        fake.inject("stale_list")
        again = await host.open_pr(spec())

        assert (again.number, again.created, len(fake.pulls)) == (first.number, False, 1)
        assert fake.pulls[0]["reviewers"] == [{"id": 7}] and fake.pulls[0]["labels"] == ["bug"]
        assert all(r.headers.get("private-token") == TOKEN for r in fake.requests)
        assert not any("authorization" in r.headers or TOKEN in r.path for r in fake.requests)
        assert fake.requests[0].path.startswith("/api/v4/projects/acme%2Fwidgets/merge_requests?")
        duplicate = next(r for r in fake.requests if r.method == "POST" and r is not fake.requests[1])
        assert json.loads(duplicate.body)["source_branch"] == "ticketflow/T-1-fix"


async def test_gitea_looks_labels_up_by_name_and_creates_missing_ones() -> None:
    with serve_gitea(TOKEN) as fake:
        fake.labels.append({"id": 100, "name": "bug", "color": "#f00"})
        host = GiteaHost(f"{fake.url}/api/v1", "acme/widgets", SecretStr(TOKEN))
        ref = await host.open_pr(spec(labels=("bug", "agent")))

        assert [label["id"] for label in fake.pulls[0]["labels"]] == [100, 101]
        assert [label["name"] for label in fake.labels] == ["bug", "agent"]
        assert all(r.headers.get("authorization") == f"token {TOKEN}" for r in fake.requests)
        assert ref.url == "https://gitea.example/acme/widgets/pulls/1"


@pytest.mark.parametrize("kind", ["gitlab", "gitea"])
async def test_wrong_token_is_an_auth_error_without_the_token(kind: str) -> None:
    wrong = "glpat-wrongToken0123456789abcdef"
    server = serve_gitlab if kind == "gitlab" else serve_gitea
    with server(TOKEN) as fake:
        host: GitHost = (
            GitLabHost(f"{fake.url}/api/v4", "acme/widgets", SecretStr(wrong))
            if kind == "gitlab"
            else GiteaHost(f"{fake.url}/api/v1", "acme/widgets", SecretStr(wrong))
        )
        with pytest.raises(GitHostError) as err:
            await host.open_pr(spec())
    assert (err.value.kind, err.value.retryable) == ("auth", False) and wrong not in str(err.value)


@pytest.mark.parametrize(
    ("make", "username"),
    [
        (
            lambda: GitLabHost(
                "https://gl.example/api/v4", "a/b", SecretStr(TOKEN), repo_url="https://gl.example/a/b.git"
            ),
            "oauth2",
        ),
        (
            lambda: GiteaHost(
                "https://gt.example/api/v1", "a/b", SecretStr(TOKEN), repo_url="https://gt.example/a/b.git"
            ),
            "ticketflow",
        ),
    ],
)
def test_gitlab_and_gitea_push_through_the_credential_helper(
    make: Callable[[], GitHost], username: str
) -> None:
    env = make().push_env()
    host = "gl.example" if username == "oauth2" else "gt.example"
    filled = _credential_fill(env, host)
    assert filled.returncode == 0, filled.stderr
    assert f"username={username}" in filled.stdout.splitlines() and f"password={TOKEN}" in filled.stdout
    assert not any(TOKEN in v for k, v in env.items() if k != TOKEN_ENV)


# ---------------------------------------------------------------------------------------- reviewers


@contextmanager
def _reviewed(kind: str, reviewers: tuple[str, ...], **options: Any) -> Iterator[tuple[FakeHost, GitHost]]:
    """GitHub or Gitea with reviewers configured: both take `{"reviewers": [names]}` on the same path."""
    token = SecretStr(TOKEN)
    if kind == "github":
        with serve_github(TOKEN, **options) as github_fake:
            yield github_fake, GitHubHost(github_fake.url, "acme/widgets", token, reviewers=reviewers)
    else:
        with serve_gitea(TOKEN, **options) as gitea_fake:
            yield (
                gitea_fake,
                GiteaHost(f"{gitea_fake.url}/api/v1", "acme/widgets", token, reviewers=reviewers),
            )


def _requested(fake: FakeHost, number: int = 1) -> list[str]:
    return [str(r["login"]) for r in fake.pulls[number - 1].get("requested_reviewers", [])]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("kind", ["github", "gitea"])
async def test_reviewers_are_requested_on_create_and_again_harmlessly_on_retries(kind: str) -> None:
    with _reviewed(kind, ("alice", "bob")) as (fake, host):
        first = await host.open_pr(spec())
        assert fake.review_requests == [(1, ["alice", "bob"])]

        again = await host.open_pr(spec())  # a retried attempt finds the PR
        fake.inject("stale_list")  # ...or misses it, meets "already exists" and finds it then
        raced = await host.open_pr(spec())

    assert (first.created, again.created, raced.created, len(fake.pulls)) == (True, False, False, 1)
    # Each attempt asks again (it may be the one that died before asking); the host keeps one of each.
    assert fake.review_requests == [(1, ["alice", "bob"])] * 3
    assert _requested(fake) == ["alice", "bob"]
    prefix = "/repos/acme/widgets" if kind == "github" else "/api/v1/repos/acme/widgets"
    posted = [r for r in fake.requests if r.path.endswith("/requested_reviewers")]
    assert {(r.method, r.path) for r in posted} == {("POST", f"{prefix}/pulls/1/requested_reviewers")}
    assert all(json.loads(r.body) == {"reviewers": ["alice", "bob"]} for r in posted)


@pytest.mark.parametrize("kind", ["github", "gitea"])
async def test_no_reviewers_configured_means_no_review_request(kind: str) -> None:
    with _reviewed(kind, ()) as (fake, host):
        await host.open_pr(spec())
    assert fake.review_requests == [] and not any("requested_reviewers" in r.path for r in fake.requests)


@pytest.mark.parametrize("kind", ["github", "gitea"])
async def test_a_refused_reviewer_is_a_warning_and_the_pr_stays_open(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The host's 422 refuses the whole request (the PR's author, a user who may not review), so the
    names are asked for one by one: the others are still requested, each refused one is a warning."""
    reviewers = ("alice", "mallory", "ticketflow-bot")
    with (
        caplog.at_level(logging.WARNING),
        _reviewed(kind, reviewers, rejected_reviewers={"mallory"}) as (
            fake,
            host,
        ),
    ):
        ref = await host.open_pr(spec())

    assert (ref.created, len(fake.pulls), _requested(fake)) == (True, 1, ["alice"])
    assert fake.review_requests == [
        (1, list(reviewers)),
        (1, ["alice"]),
        (1, ["mallory"]),
        (1, ["ticketflow-bot"]),
    ]
    warned = _warnings(caplog)
    assert len(warned) == 2 and all("(422)" in w for w in warned)
    assert "'mallory'" in warned[0] and "'ticketflow-bot'" in warned[1]
    if kind == "github":
        assert "not a collaborator" in warned[0] and "pull request author" in warned[1]
    assert TOKEN not in caplog.text


async def test_github_422_for_the_only_reviewer_is_one_request_and_a_warning(
    github: tuple[FakeGitHub, GitHubHost], caplog: pytest.LogCaptureFixture
) -> None:
    fake, _ = github
    host = GitHubHost(fake.url, "acme/widgets", SecretStr(TOKEN), reviewers=("ticketflow-bot",))
    with caplog.at_level(logging.WARNING):
        ref = await host.open_pr(spec())

    assert ref.created and fake.pulls[0]["state"] == "open"
    assert fake.review_requests == [(1, ["ticketflow-bot"])]
    assert _warnings(caplog) == [
        "GitHub PR #1: review not requested from 'ticketflow-bot': "
        "request rejected (422): Review cannot be requested from pull request author."
    ]


async def test_a_host_error_on_the_review_request_is_retried_without_a_second_pr(
    github: tuple[FakeGitHub, GitHubHost],
) -> None:
    """Unlike a refusal, a 5xx or a rate limit may pass: the attempt fails retryably, and its retry finds
    the PR and asks again."""
    fake, _ = github
    host = GitHubHost(fake.url, "acme/widgets", SecretStr(TOKEN), reviewers=("alice",))
    fake.review_faults.append("server_error")
    with pytest.raises(GitHostError) as err:
        await host.open_pr(spec())
    assert (err.value.kind, err.value.retryable, len(fake.pulls)) == ("unavailable", True, 1)

    ref = await host.open_pr(spec())

    assert (ref.number, ref.created, len(fake.pulls), _requested(fake)) == (1, False, 1, ["alice"])


async def test_gitlab_resolves_reviewer_names_to_ids_on_create_only() -> None:
    with serve_gitlab(TOKEN, users={"alice": 11, "Bob": 12, "alice2": 13}) as fake:
        host = GitLabHost(f"{fake.url}/api/v4", "acme/widgets", SecretStr(TOKEN), reviewers=("alice", "bob"))
        first = await host.open_pr(spec(labels=("bug",)))
        lookups = [r for r in fake.requests if r.path.startswith("/api/v4/users")]
        seen = len(fake.requests)
        again = await host.open_pr(spec(labels=("bug",)))

        assert (first.created, again.created, len(fake.pulls)) == (True, False, 1)
        assert [r.path for r in lookups] == ["/api/v4/users?username=alice", "/api/v4/users?username=bob"]
        assert all(r.headers.get("private-token") == TOKEN for r in lookups)
        create = next(r for r in fake.requests if r.method == "POST")
        assert json.loads(create.body)["reviewer_ids"] == [11, 12]
        assert fake.pulls[0]["reviewers"] == [{"id": 11}, {"id": 12}]
        # The found MR keeps its reviewers: no lookups, and no update (GitLab's replaces the whole set).
        retry = [(r.method, r.path.split("?")[0], json.loads(r.body or "{}")) for r in fake.requests[seen:]]
        assert retry == [
            ("GET", "/api/v4/projects/acme%2Fwidgets/merge_requests", {}),
            ("PUT", "/api/v4/projects/acme%2Fwidgets/merge_requests/1", {"add_labels": "bug"}),
        ]


async def test_gitlab_unknown_reviewer_is_a_warning_and_the_mr_still_opens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING), serve_gitlab(TOKEN, users={"alice": 11}) as fake:
        host = GitLabHost(
            f"{fake.url}/api/v4",
            "acme/widgets",
            SecretStr(TOKEN),
            reviewers=("ghost", "alice"),
            reviewer_ids=(7,),
        )
        ref = await host.open_pr(spec())

    assert (ref.created, len(fake.pulls)) == (True, 1)
    assert fake.pulls[0]["reviewers"] == [{"id": 7}, {"id": 11}]
    assert _warnings(caplog) == ["GitLab has no user 'ghost': not requested as a reviewer of the MR"]
    assert TOKEN not in caplog.text


def test_registry_passes_each_configured_repos_reviewers(tmp_path: Path) -> None:
    reviewers = ["alice", " @bob ", "alice", ""]
    repos = {
        "gh": RepoConfig(url="https://github.com/acme/w.git", host="github", reviewers=reviewers),
        "gl": RepoConfig(url="https://gitlab.example/grp/app.git", host="gitlab", reviewers=reviewers),
        "gt": RepoConfig(url="https://gitea.example/o/r.git", host="gitea", reviewers=reviewers),
        "plain": RepoConfig(url="https://github.com/acme/p.git", host="github"),
    }
    settings = Settings(state_dir=tmp_path / "state", repos=repos)

    for name in ("gh", "gl", "gt"):
        host = git_host_for(resolve_repo(name, settings), settings)
        assert isinstance(host, RestHost) and host.reviewers == ("alice", "bob"), name
    plain = git_host_for(resolve_repo("plain", settings), settings)
    url = "https://github.com/acme/gh.git"  # not a configured name: no configuration, no reviewers
    by_url = git_host_for(ResolvedRepo(name=url, url=url, host="github"), settings)
    assert isinstance(plain, RestHost) and isinstance(by_url, RestHost)
    assert plain.reviewers == () and by_url.reviewers == ()

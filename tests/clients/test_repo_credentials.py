"""A repository URL carrying credentials is refused everywhere, and the credentials are never shown.

The password below must not appear in any error, log line, Temporal history or CLI output; the URL
forms ssh uses (a user, no password) stay accepted. Also: which git host a plain URL resolves to.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from activities.repos import RepoError, resolve_repo
from activities.settings import RepoConfig, Settings
from clients import cli, tickets
from tests.helpers import example_ticket, result_of, submit
from workflows.contracts import Ticket, TicketState, repo_has_credentials, workflow_id_for

PASSWORD = "hunter2-Sup3rSecret"
CREDENTIALED = [
    f"https://alice:{PASSWORD}@github.com/acme/billing.git",
    f"https://x-access-token:{PASSWORD}@example.org/acme/billing.git",
    f"https://{PASSWORD}@github.com/acme/billing.git",  # a token as the user name
    f"http://alice:{PASSWORD}@git.example.org:8080/billing",
    f"ssh://git:{PASSWORD}@github.com/acme/billing.git",
    f"alice:{PASSWORD}@github.com:acme/billing.git",
]
ACCEPTED = [
    "git@github.com:acme/billing.git",
    "ssh://git@github.com/acme/billing.git",
    "https://github.com/acme/billing.git",
    "file:///srv/git/billing.git",
    "/srv/git/billing.git",
    "billing",
    "https://github.com/acme/billing@v2",  # an @ in the path is no user
]


def ticket_fields(repo: str) -> dict[str, str]:
    return {"id": "PAY-1", "title": "Fix rounding", "body": "Round half up.", "repo": repo}


@pytest.mark.parametrize("repo", CREDENTIALED)
def test_a_credentialed_repo_is_refused_without_echoing_it(repo: str) -> None:
    assert repo_has_credentials(repo)
    with pytest.raises(ValidationError) as caught:
        Ticket.model_validate(ticket_fields(repo))
    assert "must not carry credentials" in str(caught.value)
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)


@pytest.mark.parametrize("repo", ACCEPTED)
def test_urls_without_a_password_are_accepted(repo: str) -> None:
    assert not repo_has_credentials(repo)
    assert Ticket.model_validate(ticket_fields(repo)).repo == repo


def test_a_contract_wrapping_a_ticket_hides_the_input_too() -> None:
    from workflows.contracts import RunOptions, TicketRun

    with pytest.raises(ValidationError) as caught:
        TicketRun.model_validate({"ticket": ticket_fields(CREDENTIALED[0]), "options": RunOptions()})
    assert PASSWORD not in str(caught.value)


def test_a_configured_repo_with_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"state_dir": str(tmp_path), "repos": {"b": {"url": CREDENTIALED[0]}}})
    assert "must not carry credentials" in str(caught.value) and PASSWORD not in str(caught.value)
    with pytest.raises(ValidationError) as direct:
        RepoConfig(url=CREDENTIALED[1])
    assert PASSWORD not in str(direct.value)


def test_resolve_repo_refuses_credentials_a_caller_did_not_validate(tmp_path: Path) -> None:
    with pytest.raises(RepoError) as caught:
        resolve_repo(CREDENTIALED[0], Settings(state_dir=tmp_path))
    assert PASSWORD not in str(caught.value)


# ------------------------------------------------------------------------------------------ the CLI


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("TICKETFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))
    (tmp_path / "ticketflow.toml").touch()  # an explicit config file must exist
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(tmp_path / "ticketflow.toml"))
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{closed_port()}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("repo", CREDENTIALED)
def test_cli_submit_from_flags(isolated: Path, repo: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["submit", "--title", "Fix rounding", "--body", "Round half up.", "--repo", repo])
    out, err = capsys.readouterr()
    assert code == 1 and err.startswith("error: --title/--body/--repo: repo: must not carry credentials"), err
    assert PASSWORD not in out + err


def test_cli_submit_of_a_ticket_file(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = isolated / "PAY-1.md"
    path.write_text(f"---\ntitle: Fix rounding\nrepo: {CREDENTIALED[0]}\n---\nRound half up.\n")
    code = cli.main(["submit", str(path)])
    out, err = capsys.readouterr()
    assert code == 1 and "repo: must not carry credentials" in err, err
    assert PASSWORD not in out + err


def test_cli_with_a_credentialed_repo_in_the_config(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (isolated / "ticketflow.toml").write_text(f'[repos.billing]\nurl = "{CREDENTIALED[0]}"\n')
    code = cli.main(["list"])
    out, err = capsys.readouterr()
    assert code == 2 and "repos.billing.url: must not carry credentials" in err, err
    assert PASSWORD not in out + err


# ---------------------------------------------------------------------------- through Temporal

TEMPORAL = pytest.mark.asyncio(loop_scope="session")


@TEMPORAL
async def test_submit_through_the_client_leaves_no_trace(
    client: Client,
    worker: Settings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    honest = example_ticket("demo-4-readme.md", id="honest-1")
    await submit(client, worker, honest)
    assert (await result_of(client, honest.id)).state is TicketState.DONE

    for number, repo in enumerate(CREDENTIALED):
        fields = ticket_fields(repo) | {"id": f"leaky-{number}"}
        with pytest.raises(ValidationError) as invalid:
            Ticket.model_validate(fields)
        assert PASSWORD not in str(invalid.value)
        # A caller that skips validation (model_construct) is stopped at submit all the same.
        unchecked = Ticket.model_construct(**(Ticket(**ticket_fields("calc")).model_dump() | fields))
        with pytest.raises(tickets.TicketOperationError) as refused:
            await tickets.submit(client, worker, unchecked)
        assert "must not carry credentials" in str(refused.value) and PASSWORD not in str(refused.value)
        with pytest.raises(RPCError):  # nothing was started, so no history holds the URL
            await client.get_workflow_handle(workflow_id_for(fields["id"])).describe()

    history = await tickets.handle_for(client, honest.id).fetch_history()
    assert PASSWORD not in history.to_json()
    capsys.readouterr()
    await cli.cmd_list(argparse.Namespace(json=True, state=None), worker)
    listed = capsys.readouterr()
    assert honest.id in [row["ticket_id"] for row in json.loads(listed.out)]
    await cli.cmd_status(argparse.Namespace(json=True, id=honest.id), worker)
    status = capsys.readouterr()
    assert json.loads(status.out)["ticket_id"] == honest.id
    assert PASSWORD not in listed.out + listed.err + status.out + status.err
    assert PASSWORD not in caplog.text


# ------------------------------------------------------------------------------ URL -> git host


@pytest.mark.parametrize(
    ("url", "host", "project"),
    [
        ("https://github.com/acme/billing", "github", "acme/billing"),
        ("https://github.com/acme/billing.git", "github", "acme/billing"),
        ("git@github.com:acme/billing.git", "github", "acme/billing"),
        ("ssh://git@github.com/acme/billing.git", "github", "acme/billing"),
        ("https://gitlab.com/group/sub/app.git", "gitlab", "group/sub/app"),
        ("git@gitlab.com:group/app.git", "gitlab", "group/app"),
        ("file:///srv/git/billing.git", "local", None),
    ],
)
def test_a_plain_url_picks_its_host(tmp_path: Path, url: str, host: str, project: str | None) -> None:
    repo = resolve_repo(url, Settings(state_dir=tmp_path))
    assert (repo.url, repo.host, repo.github_repo) == (url, host, project)


def test_a_url_of_a_configured_repo_uses_its_config(tmp_path: Path) -> None:
    config = RepoConfig(url="https://git.acme.io/acme/billing.git", host="gitea", base_branch="trunk")
    settings = Settings(state_dir=tmp_path, repos={"billing": config})
    for url in ("https://git.acme.io/acme/billing.git", "https://GIT.acme.io/acme/billing/"):
        repo = resolve_repo(url, settings)
        assert (repo.name, repo.host, repo.url, repo.base_branch) == ("billing", "gitea", config.url, "trunk")


def test_a_local_path_of_a_configured_repo_uses_its_config(tmp_path: Path) -> None:
    bare = tmp_path / "billing.git"
    bare.mkdir()
    settings = Settings(state_dir=tmp_path, repos={"billing": RepoConfig(url=str(bare), base_branch="trunk")})
    assert resolve_repo(str(bare), settings).base_branch == "trunk"


@pytest.mark.parametrize(
    "url",
    [
        "https://bitbucket.org/acme/billing.git",
        "git@git.example.org:acme/billing.git",
        "https://github.com/acme",
    ],
)
def test_any_other_url_says_what_to_configure(tmp_path: Path, url: str) -> None:
    with pytest.raises(RepoError) as caught:
        resolve_repo(url, Settings(state_dir=tmp_path))
    message = str(caught.value)
    assert f'add [repos.NAME] with url = "{url}" and host = ' in message and "ticketflow.toml" in message

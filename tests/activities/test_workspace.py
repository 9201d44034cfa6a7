from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import workspace as workspace_module
from activities.gitops import commit_all, head
from activities.repos import resolve_repo
from activities.settings import RepoConfig, Settings
from activities.workspace import WorkspaceActivities, file_lock
from tests.activities.conftest import git, push_commit
from workflows.contracts import Ticket, Workspace, WorkspaceRequest

MakeTicket = Callable[..., Ticket]


async def prepare(
    local_settings: Settings, ticket: Ticket, env: ActivityEnvironment | None = None
) -> Workspace:
    run = (env or ActivityEnvironment()).run
    result: Workspace = await run(
        WorkspaceActivities(local_settings).prepare_workspace, WorkspaceRequest(ticket=ticket)
    )
    return result


async def test_prepare_creates_worktree_on_ticket_branch(
    local_settings: Settings, make_ticket: MakeTicket, remote_repo: Path
) -> None:
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    ticket = make_ticket()
    ws = await prepare(local_settings, ticket, env)

    path = Path(ws.path)
    assert path == local_settings.worktrees_dir / "T1"
    assert (path / "calc.py").is_file()
    assert git(path, "symbolic-ref", "HEAD").strip() == f"refs/heads/{ticket.branch}"
    assert ws.branch == "ticketflow/T1-improve-calc-t1"
    assert ws.base_branch == "main"
    assert ws.base_commit == git(remote_repo, "rev-parse", "main").strip() == await head(path)
    assert ws.repo_url == str(remote_repo)
    assert (ws.host_queue, ws.git_host) == ("ticketflow@test-host", "local")
    assert (ws.stack, ws.test_command) == (["python"], "python -m unittest discover -v")
    assert beats, "the activity heartbeats"


async def test_context_summary(workspace: Workspace) -> None:
    summary = workspace.context_summary
    assert "Stack: python" in summary
    assert "Test command: python -m unittest discover -v" in summary
    assert "A tiny calculator used by the ticketflow tests." in summary
    assert "Files (4 tracked):" in summary
    assert "tests/test_calc.py" in summary
    assert "Initial calculator" in summary
    assert len(summary.encode()) <= 6000


async def test_prepare_twice_reuses_worktree_and_keeps_wip(
    local_settings: Settings, make_ticket: MakeTicket, remote_repo: Path
) -> None:
    first = await prepare(local_settings, make_ticket())
    path = Path(first.path)
    (path / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    wip = await commit_all(path, "WIP: agent step 1")
    (path / "notes.txt").write_text("uncommitted agent work\n")
    push_commit(remote_repo, {"other.py": "x = 1\n"}, "Base moves on")

    second = await prepare(local_settings, make_ticket())

    assert second.path == first.path
    assert await head(path) == wip
    assert (path / "notes.txt").read_text() == "uncommitted agent work\n"
    assert second.base_commit == first.base_commit  # the fork point, not the new base tip


async def test_broken_worktree_is_recreated_on_existing_branch(
    local_settings: Settings, make_ticket: MakeTicket
) -> None:
    first = await prepare(local_settings, make_ticket())
    path = Path(first.path)
    (path / "feature.py").write_text("FEATURE = True\n")
    wip = await commit_all(path, "WIP: feature")
    shutil.rmtree(path)
    path.mkdir()
    (path / "junk").write_text("left over by a crashed worker\n")

    second = await prepare(local_settings, make_ticket())

    assert await head(path) == wip
    assert (path / "feature.py").is_file() and not (path / "junk").exists()
    assert second.base_commit == first.base_commit


async def test_two_tickets_share_one_mirror(local_settings: Settings, make_ticket: MakeTicket) -> None:
    one, two = await asyncio.gather(
        prepare(local_settings, make_ticket("T1")), prepare(local_settings, make_ticket("T2"))
    )

    mirrors = [p for p in local_settings.mirrors_dir.iterdir() if p.is_dir()]
    assert len(mirrors) == 1
    for ws in (one, two):
        common = Path(ws.path) / git(Path(ws.path), "rev-parse", "--git-common-dir").strip()
        assert common.resolve() == mirrors[0].resolve()
    assert one.base_commit == two.base_commit
    # The mirror keeps remote branches apart from ticket branches, so a prune cannot delete them.
    refs = git(mirrors[0], "for-each-ref", "--format=%(refname)").split()
    assert "refs/remotes/origin/main" in refs
    assert {f"refs/heads/{one.branch}", f"refs/heads/{two.branch}"} <= set(refs)


async def test_unknown_base_branch_is_not_retryable(
    local_settings: Settings, make_ticket: MakeTicket
) -> None:
    with pytest.raises(ApplicationError) as err:
        await prepare(local_settings, make_ticket(base_branch="no-such-branch"))
    assert err.value.type == "RepoNotFound"
    assert err.value.non_retryable
    assert "no branch 'no-such-branch'" in str(err.value)


@pytest.mark.parametrize("repo", ["file:///nonexistent/repo.git", "no-such-repo-name"])
async def test_unreachable_repo_is_not_retryable(
    local_settings: Settings, make_ticket: MakeTicket, repo: str
) -> None:
    with pytest.raises(ApplicationError) as err:
        await prepare(local_settings, make_ticket(repo=repo))
    assert err.value.type == "RepoNotFound"
    assert err.value.non_retryable


async def test_repo_config_base_branch_and_test_command(
    local_settings: Settings, make_ticket: MakeTicket, remote_repo: Path
) -> None:
    develop = push_commit(remote_repo, {"dev.py": "DEV = 1\n"}, "Develop work")
    git(remote_repo, "branch", "develop", develop)
    git(remote_repo, "update-ref", "refs/heads/main", f"{develop}~1")
    local_settings.repos = {
        "calc": RepoConfig(url=str(remote_repo), base_branch="develop", test_command="make check")
    }

    configured = await prepare(local_settings, make_ticket("T1", repo="calc"))
    explicit = await prepare(
        local_settings, make_ticket("T2", repo="calc", base_branch="main", test_command="tox")
    )

    assert (configured.base_branch, configured.base_commit) == ("develop", develop)
    assert configured.test_command == "make check"
    # "main" is the default, so the repo config wins; an explicit test command always wins.
    assert explicit.base_branch == "develop"
    assert explicit.test_command == "tox"


async def test_waits_for_the_mirror_file_lock_and_heartbeats(
    local_settings: Settings, make_ticket: MakeTicket, remote_repo: Path
) -> None:
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    mirror = local_settings.mirrors_dir / resolve_repo(str(remote_repo), local_settings).key
    activities = WorkspaceActivities(local_settings, heartbeat_every=0.05)
    req = WorkspaceRequest(ticket=make_ticket())

    # Another worker process holding the lock looks just like this: a separate open file description.
    async with file_lock(mirror.with_name(mirror.name + ".lock")):
        task = asyncio.ensure_future(env.run(activities.prepare_workspace, req))
        await asyncio.sleep(0.4)
        assert not task.done()
        assert len(beats) >= 3
    ws: Workspace = await asyncio.wait_for(task, 10)
    assert Path(ws.path).is_dir()


async def test_cancel_while_waiting_for_the_lock_does_not_leak_it(
    local_settings: Settings, make_ticket: MakeTicket, remote_repo: Path
) -> None:
    mirror = local_settings.mirrors_dir / resolve_repo(str(remote_repo), local_settings).key
    async with file_lock(mirror.with_name(mirror.name + ".lock")):
        task = asyncio.ensure_future(prepare(local_settings, make_ticket()))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    ws = await asyncio.wait_for(prepare(local_settings, make_ticket()), 10)
    assert Path(ws.path).is_dir()


async def test_tickets_waiting_on_one_fetch_share_it(
    local_settings: Settings, make_ticket: MakeTicket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tickets queued behind a mirror fetch reuse it instead of fetching one after another."""
    fetches: list[Path] = []
    real_sync = workspace_module.sync_mirror

    async def counting_sync(
        url: str, mirror: Path, secrets: list[str], env: dict[str, str] | None = None
    ) -> None:
        fetches.append(mirror)
        await real_sync(url, mirror, secrets, env)

    # Counting calls of our own function (not a client of an external service) to see the coalescing.
    monkeypatch.setattr(workspace_module, "sync_mirror", counting_sync)
    tickets = [make_ticket(f"share-{n}") for n in range(6)]
    await asyncio.gather(*(prepare(local_settings, t) for t in tickets))
    assert all((local_settings.worktrees_dir / t.id).is_dir() for t in tickets)
    assert 1 <= len(fetches) < len(tickets)

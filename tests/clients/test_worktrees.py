"""`ticketflow worktrees [--prune]` on the real dev server, with real tickets, real git and real worktrees."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities import worktree_pool
from activities.repos import resolve_repo
from activities.settings import Settings
from clients import cli, tickets
from clients.worktrees import UNKNOWN, disk_usage
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from workflows.contracts import TicketState


def git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


async def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str
) -> tuple[int, str, str]:
    """cli.main as the console script runs it, with the test's settings; in a thread, since it runs
    its own event loop."""
    monkeypatch.setattr(cli, "load_settings", lambda: settings)
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def listing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings, *flags: str
) -> dict[str, Any]:
    code, out, err = await run_cli(monkeypatch, capsys, settings, "worktrees", "--json", *flags)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def by_ticket(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tree["ticket_id"]: tree for tree in data["worktrees"]}


def line_of(out: str, ticket_id: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{ticket_id} "))


def mirror_of(settings: Settings) -> Path:
    return settings.mirrors_dir / resolve_repo("calc", settings).key


async def test_prune_releases_finished_and_unknown_keeps_running_and_trims_the_pool(
    client: Client, worker: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    worker.keep_worktrees = True  # a DONE ticket's worktree is left behind, as before release existed
    worker.worktree_pool_size = 1
    done = example_ticket("demo-1-multiply.md", id="wt-done")
    blocked = example_ticket("demo-5-rounding.md", id="wt-blocked")
    ended = example_ticket("demo-5-rounding.md", id="wt-terminated")
    for ticket in (done, blocked, ended):
        await submit(client, worker, ticket)
    assert (await result_of(client, done.id)).state is TicketState.DONE
    for ticket in (blocked, ended):
        await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED))
    await tickets.handle_for(client, ended.id).terminate("ended through Temporal directly")

    mirror, worktrees = mirror_of(worker), worker.worktrees_dir
    ghost = worktrees / "wt-ghost"  # its workflow is gone (a reset dev server)
    git(mirror, "worktree", "add", "-q", "-b", "ticketflow/wt-ghost-x", str(ghost), "origin/main")
    (ghost / "notes.txt").write_text("work nobody committed\n")
    (worktrees / done.id / "leftover.txt").write_text("written after the PR\n")
    (worktrees / "stray").mkdir()
    (worktrees / "stray" / "file.txt").write_text("not a worktree\n")
    pool = worker.worktree_pool_dir / mirror.name
    for n in range(3):  # left by a larger worktree_pool_size
        git(mirror, "worktree", "add", "-q", "--detach", str(pool / f"{n:020d}-abcdef-old{n}"), "origin/main")

    before = await listing(monkeypatch, capsys, worker)
    trees = by_ticket(before)
    assert {t: (trees[t]["state"], trees[t]["action"]) for t in trees} == {
        done.id: ("DONE", "release"),
        blocked.id: ("BLOCKED", "keep"),
        ended.id: ("TERMINATED", "release"),
        "wt-ghost": (UNKNOWN, "keep"),  # a wrong server would make every ticket look unknown
        "stray": (UNKNOWN, "keep"),
    }
    assert trees[done.id]["branch"] == done.branch and trees[done.id]["repo"] == mirror.name
    assert all(tree["size_bytes"] > 0 and tree["result"] is None for tree in trees.values())
    [pool_row] = before["pools"]
    assert (pool_row["repo"], pool_row["idle"], pool_row["limit"], pool_row["action"]) == (
        mirror.name,
        3,
        1,
        "trim 2",
    )
    assert [t["ticket_id"] for t in before["worktrees"]] == sorted(trees)

    code, out, _ = await run_cli(monkeypatch, capsys, worker, "worktrees")
    assert code == 0
    assert "keep: ticket is running (BLOCKED)" in line_of(out, blocked.id)
    assert "keep: no such ticket on this Temporal server (release it with --unknown)" in line_of(
        out, "wt-ghost"
    )
    assert "3/1 idle" in out and "trim 2" in out

    code, out, _ = await run_cli(monkeypatch, capsys, worker, "worktrees", "--prune", "--unknown")
    assert code == 0, out
    assert "removed; uncommitted work committed onto ticketflow/wt-ghost-x as " in line_of(out, "wt-ghost")
    assert f"removed; uncommitted work committed onto {done.branch} as " in line_of(out, done.id)
    assert line_of(out, ended.id).endswith("removed")
    assert "kept: ticket is running (BLOCKED)" in line_of(out, blocked.id)
    assert "kept: not a worktree of a mirror" in line_of(out, "stray")
    assert "1/1 idle" in out and "removed 2 idle worktree(s)" in out
    assert out.splitlines()[-1].startswith("released 3 worktree(s) (")
    assert out.splitlines()[-1].endswith("; 2 had uncommitted work, now committed onto its branch")

    # Released worktrees are gone (the pool was full), their work is on their branches, the rest stays.
    assert sorted(p.name for p in worktrees.iterdir()) == ["stray", blocked.id]
    assert git(mirror, "show", "ticketflow/wt-ghost-x:notes.txt") == "work nobody committed\n"
    assert git(mirror, "show", f"{done.branch}:leftover.txt") == "written after the PR\n"
    assert git(mirror, "log", "-1", "--format=%s", done.branch).startswith("wip(ticketflow wt-done): ")
    assert [p.name for p in worktree_pool.idle(pool)] == [f"{2:020d}-abcdef-old2"]  # the newest stays
    registered = git(mirror, "worktree", "list", "--porcelain")
    assert "old0" not in registered and "wt-ghost" not in registered and blocked.id in registered
    assert (await tickets.describe(client, blocked.id)).state == "BLOCKED"

    after = await listing(monkeypatch, capsys, worker)
    assert sorted(by_ticket(after)) == ["stray", blocked.id]
    assert after["pools"][0]["action"] == "keep"
    await tickets.handle_for(client, blocked.id).terminate("test done")


async def test_a_failed_tickets_worktree_only_goes_with_failed_older_than(
    client: Client, worker: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    worker.blocked_timeout_seconds = 1  # BLOCKED with nobody answering ends FAILED
    ticket = example_ticket("demo-5-rounding.md", id="wt-failed")
    await submit(client, worker, ticket)
    with pytest.raises(WorkflowFailureError):
        await result_of(client, ticket.id)
    path = worker.worktrees_dir / ticket.id
    (path / "scratch.txt").write_text("half done\n")

    code, out, _ = await run_cli(monkeypatch, capsys, worker, "worktrees", "--prune")
    assert code == 0
    assert "kept: FAILED: `ticketflow retry` resumes in it" in line_of(out, ticket.id)
    code, out, _ = await run_cli(
        monkeypatch, capsys, worker, "worktrees", "--prune", "--failed-older-than", "1"
    )
    assert code == 0
    assert "within --failed-older-than 1" in line_of(out, ticket.id)
    assert (path / "scratch.txt").is_file()

    pruned = await listing(monkeypatch, capsys, worker, "--prune", "--failed-older-than", "0")
    tree = by_ticket(pruned)[ticket.id]
    assert (tree["state"], tree["action"], tree["result"]) == ("FAILED", "release", "recycled")
    mirror = mirror_of(worker)
    assert tree["saved_commit"] == git(mirror, "rev-parse", ticket.branch).strip()
    assert git(mirror, "show", f"{ticket.branch}:scratch.txt") == "half done\n"
    assert not path.exists()
    assert len(worktree_pool.idle(worker.worktree_pool_dir / mirror.name)) == 1
    [pool] = pruned["pools"]
    assert (pool["repo"], pool["idle"], pool["limit"], pool["removed"]) == (mirror.name, 1, 4, 0)


async def test_a_negative_age_is_a_one_line_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run_cli(monkeypatch, capsys, settings, "worktrees", "--failed-older-than", "-1")
    assert (code, out, err) == (1, "", "error: --failed-older-than: DAYS must be 0 or more\n")


async def test_temporal_down_is_a_one_line_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    down = settings.model_copy(update={"temporal_address": address})
    code, out, err = await run_cli(monkeypatch, capsys, down, "worktrees", "--prune")
    assert code == 1 and out == ""
    assert err.startswith(f"error: cannot reach Temporal at {address} (") and err.count("\n") == 1


def test_disk_usage_counts_blocks_once_per_file_and_never_follows_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data").write_bytes(b"x" * 100_000)
    os.link(tree / "sub" / "data", tree / "hardlink")
    outside = tmp_path / "outside"
    outside.write_bytes(b"y" * 1_000_000)
    (tree / "link").symlink_to(outside)
    size, newest = disk_usage(tree)
    data = (tree / "sub" / "data").stat()
    assert data.st_blocks * 512 <= size < data.st_blocks * 512 + 64 * 1024  # data once, folders, a link
    assert newest >= data.st_mtime

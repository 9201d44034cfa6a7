"""gitops helpers on real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.gitops import clear_stale_index_lock, commit_all, git
from tests.fakes.repos import add_worktree, clone, make_remote


async def test_a_stale_index_lock_is_removed_and_commits_work_again(tmp_path: Path) -> None:
    repo = clone(make_remote(tmp_path / "remote"), tmp_path / "clone")
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "ticketflow/t-1")
    git_dir = repo / ".git" / "worktrees" / "wt"
    (git_dir / "index.lock").write_text("")  # what a SIGKILLed `git add` leaves behind
    (worktree / "new.txt").write_text("x\n")

    assert await clear_stale_index_lock(worktree) is True
    assert await commit_all(worktree, "after the crash") is not None
    assert await clear_stale_index_lock(worktree) is False


async def test_head_and_branch_locks_of_a_killed_commit_are_removed(tmp_path: Path) -> None:
    repo = clone(make_remote(tmp_path / "remote"), tmp_path / "clone")
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "ticketflow/t-2")
    git_dir = repo / ".git" / "worktrees" / "wt"
    (git_dir / "HEAD.lock").write_text("")
    (repo / ".git" / "refs" / "heads" / "ticketflow" / "t-2.lock").write_text("")
    (worktree / "new.txt").write_text("x\n")

    assert await clear_stale_index_lock(worktree) is True
    assert await commit_all(worktree, "after the crash") is not None
    assert not (repo / ".git" / "refs" / "heads" / "ticketflow" / "t-2.lock").exists()


async def test_the_workers_git_variables_never_reach_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = clone(make_remote(tmp_path / "remote"), tmp_path / "clone")
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "ticketflow/t-3")
    elsewhere = clone(make_remote(tmp_path / "other"), tmp_path / "elsewhere")
    monkeypatch.setenv("GIT_DIR", str(elsewhere / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(elsewhere))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.fsmonitor'='touch /nonexistent/x'")

    out = await git(worktree, "rev-parse", "--absolute-git-dir", "--show-toplevel")
    assert out.splitlines() == [str(repo / ".git" / "worktrees" / "wt"), str(worktree)]
    options = await git(worktree, "config", "--get-all", "core.hooksPath")
    assert Path(options.strip()).is_dir() and not any(Path(options.strip()).iterdir())

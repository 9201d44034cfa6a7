"""Real git repositories for tests: a bare "remote" with a main branch, clones, worktrees, commits.

Plain functions rather than fixtures, so any test module can build the layout it needs. They run git
synchronously: they are test setup, called from sync fixtures, never from activity code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from activities.gitops import COMMIT_IDENTITY
from activities.repos import git_env

# Keep a developer's global config (signing, hooks) from changing what the tests do.
_CONFIG = [*COMMIT_IDENTITY, "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]


def run_git(cwd: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *_CONFIG, *args],
        cwd=cwd,
        env=git_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def make_remote(root: Path, name: str = "remote.git") -> Path:
    """A bare repository with one commit on main, standing in for the hosted repository."""
    root.mkdir(parents=True, exist_ok=True)
    bare = root / name
    run_git(root, "init", "-q", "--bare", str(bare))
    seed = root / f"{name}-seed"
    run_git(root, "init", "-q", str(seed))
    commit_file(seed, "README.md", "# demo\n", "initial commit")
    run_git(seed, "push", "-q", str(bare), "HEAD:refs/heads/main")
    return bare


def clone(remote: Path, dest: Path) -> Path:
    run_git(dest.parent, "clone", "-q", str(remote), str(dest))
    return dest


def add_worktree(repo: Path, path: Path, branch: str, start: str = "origin/main") -> str:
    """A new worktree on a new branch from start; returns the base commit."""
    run_git(repo, "worktree", "add", "-q", "-b", branch, str(path), start)
    return rev_parse(path, "HEAD")


def commit_file(repo: Path, name: str, content: str, message: str) -> str:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    run_git(repo, "add", name)
    run_git(repo, "commit", "-q", "--no-verify", "-m", message)
    return rev_parse(repo, "HEAD")


def rev_parse(repo: Path, rev: str) -> str:
    return run_git(repo, "rev-parse", rev).strip()


def create_branch(bare: Path, branch: str, start: str = "main") -> str:
    """A branch directly in a bare repository, as if someone had pushed it."""
    run_git(bare, "branch", branch, start)
    return rev_parse(bare, f"refs/heads/{branch}")

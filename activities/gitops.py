"""Small async wrappers around the git CLI for activities (never blocks the event loop)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from activities import git_guard
from activities.git_guard import GitLocateError

COMMIT_IDENTITY = ["-c", "user.name=ticketflow", "-c", "user.email=ticketflow@localhost"]


class GitError(Exception):
    def __init__(self, args: tuple[str, ...], code: int, stderr: str) -> None:
        self.code = code
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
        super().__init__(f"git {' '.join(args[:3])} failed: {last}")


async def git(cwd: Path | None, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run `git <args>` pinned to the repository at cwd and return stdout; raise GitError with git's own
    message on failure.

    cwd is a ticketflow mirror or worktree, another repository (a local git host's remote), or None for
    a command that needs none (clone, ls-remote by URL). git never finds its directories, config or hooks
    on its own: activities/git_guard.py decides them, and raises GitTampered when a mirror's config is
    not ticketflow's. env adds to the environment (a git host's credential helper).
    """
    try:
        location = await asyncio.to_thread(git_guard.locate, cwd)
    except (GitLocateError, OSError) as exc:
        raise GitError(args, 128, f"fatal: {exc}") from None
    if location.mirror is not None:
        await git_guard.verify_mirror_config(location.mirror)
    network = git_guard.subcommand(args) in git_guard.NETWORK_COMMANDS
    proc = await asyncio.create_subprocess_exec(
        "git",
        *git_guard.pinned_options(),
        *args,
        cwd=str(git_guard.cwd_for(location)),
        env=git_guard.pinned_environment(location, network, env or {}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise GitError(args, proc.returncode or -1, err.decode(errors="replace"))
    return out.decode(errors="replace")


async def head(worktree: Path) -> str:
    return (await git(worktree, "rev-parse", "HEAD")).strip()


async def commit_all(worktree: Path, message: str) -> str | None:
    """Stage everything and commit; returns the new commit, or None when nothing changed."""
    await git(worktree, "add", "-A")
    if not (await git(worktree, "status", "--porcelain")).strip():
        return None
    await git(worktree, *COMMIT_IDENTITY, "commit", "-q", "--no-verify", "-m", message)
    return await head(worktree)


async def clear_stale_index_lock(worktree: Path) -> bool:
    """Remove the lock files a killed git left in this worktree; returns whether there were any.

    Covers the worktree's index.lock and HEAD.lock and the lock of the branch it has checked out (a
    commit killed between taking and renaming them leaves them behind, and every later git command on
    the worktree then fails with "remove the file manually"). Only call this where nothing else can be
    using the worktree: one ticket owns it, and Temporal runs one attempt of its activity at a time,
    so at the start of an attempt any such lock is a leftover.
    """
    out = await git(
        worktree, "rev-parse", "--absolute-git-dir", "--git-common-dir", "--symbolic-full-name", "HEAD"
    )
    git_dir, common, branch = [*out.splitlines(), "", "", ""][:3]
    locks = [Path(git_dir) / "index.lock", Path(git_dir) / "HEAD.lock"]
    if branch.startswith("refs/heads/"):
        # --git-common-dir may be relative to the worktree; an absolute one replaces it in the join.
        locks.append(branch_lock(worktree / common, branch.removeprefix("refs/heads/")))
    return remove_locks(locks)


def branch_lock(common_dir: Path, branch: str) -> Path:
    return common_dir / "refs" / "heads" / f"{branch}.lock"


def stale_ref_locks(git_dir: Path, older_than: float) -> list[Path]:
    """Ref and packed-refs locks in git_dir untouched for older_than seconds: no live git holds a ref
    lock that long (it takes them for one update), so these are a killed git's leftovers."""
    now = time.time()
    candidates = [git_dir / "packed-refs.lock", *(git_dir / "refs").rglob("*.lock")]
    return [lock for lock in candidates if lock.exists() and now - lock.stat().st_mtime > older_than]


def remove_locks(locks: list[Path]) -> bool:
    found = [lock for lock in locks if lock.exists()]
    for lock in found:
        lock.unlink(missing_ok=True)
    return bool(found)

"""Idle worktrees per repository: a finished ticket's worktree, made clean, waits for the next ticket.

A new worktree writes every file of the repository; a recycled one, checked out on the next ticket's
branch, rewrites only the files that differ, which on a large repository is most of prepare_workspace's
time. A pool is a directory per mirror (settings.worktree_pool_dir / <mirror name>) holding registered,
detached, clean worktrees of that mirror. Claiming and parking happen under the mirror's lock
(WorkspaceActivities._locked), so one idle worktree goes to one ticket only. Branches are never deleted:
they live in the mirror and hold the agents' commits.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from pathlib import Path

from activities.gitops import GitError, clear_stale_index_lock, commit_all, git

# What git keeps per worktree in the worktree's own git dir, besides HEAD and the index: operations a
# previous agent left half done, ORIG_HEAD/FETCH_HEAD, per-worktree refs (bisect, rewritten) and config,
# and HEAD's reflog (with which `git checkout -` would land on the previous ticket's branch). The next
# ticket must start as if from a fresh `git worktree add`.
TICKET_STATE = (
    "MERGE_HEAD",
    "MERGE_MSG",
    "MERGE_MODE",
    "MERGE_RR",
    "AUTO_MERGE",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "SQUASH_MSG",
    "ORIG_HEAD",
    "FETCH_HEAD",
    "BISECT_LOG",
    "BISECT_START",
    "BISECT_TERMS",
    "BISECT_EXPECTED_REV",
    "BISECT_NAMES",
    "BISECT_ANCESTORS_OK",
    "BISECT_RUN",
    "rebase-merge",
    "rebase-apply",
    "sequencer",
    "config.worktree",
    "refs",
    "logs",
    # Never made by git in a worktree's own directory: what an agent planted there (git_guard keeps it
    # inert, and the next ticket must not inherit it).
    "hooks",
)


def pool_for(pool_root: Path, mirror: Path) -> Path:
    return pool_root / mirror.name


def _same_worktree(path: Path, mirror: Path, top: str, common: str) -> bool:
    return Path(top).resolve() == path.resolve() and (path / common).resolve() == mirror.resolve()


async def worktree_head(path: Path, mirror: Path) -> str | None:
    """What HEAD names ("refs/heads/...", or "HEAD" when detached) if path is a worktree of mirror."""
    if not await asyncio.to_thread(path.is_dir):
        return None
    try:
        out = await git(path, "rev-parse", "--show-toplevel", "--git-common-dir", "--symbolic-full-name", "@")
    except GitError:
        return None
    lines = out.splitlines()
    if len(lines) != 3 or not await asyncio.to_thread(_same_worktree, path, mirror, lines[0], lines[1]):
        return None
    return lines[2]


def idle(pool: Path) -> list[Path]:
    """The pool's worktrees, most recently parked first (its files are likeliest in the page cache)."""
    if not pool.is_dir():
        return []
    return sorted((p for p in pool.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)


async def save_uncommitted(path: Path, branch: str, message: str) -> bool:
    """Commit what is left uncommitted (a cancelled agent's last step) onto the ticket's branch.

    False when there is something to save but it cannot go onto the branch (HEAD is elsewhere, a
    commit fails): the caller must then leave the worktree alone rather than lose it.
    """
    await clear_stale_index_lock(path)
    if not (await git(path, "status", "--porcelain")).strip():
        return True
    try:
        if (await git(path, "symbolic-ref", "--quiet", "HEAD")).strip() != f"refs/heads/{branch}":
            return False
        await commit_all(path, message)
    except GitError:
        return False
    return True


def _forget_ticket_state(git_dir: Path, mirror: Path) -> None:
    # Only ever a linked worktree's own directory (<mirror>/worktrees/<id>), never the mirror's refs.
    if git_dir.parent.name != "worktrees" or git_dir.parent.parent.resolve() != mirror.resolve():
        raise RuntimeError(f"{git_dir} is not a worktree directory of {mirror}")
    for name in TICKET_STATE:
        entry = git_dir / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


async def scrub(path: Path, mirror: Path) -> None:
    """Detach the worktree from its branch and make it exactly its commit: no untracked, ignored or
    modified file (build outputs included) and no ticket state may reach the next ticket."""
    await clear_stale_index_lock(path)
    await git(path, "reset", "--hard", "--quiet")  # HEAD only: the branch does not move
    await git(path, "checkout", "--detach", "--quiet")  # so the branch can be checked out elsewhere
    await git(path, "clean", "-ffdxq")
    git_dir = Path((await git(path, "rev-parse", "--absolute-git-dir")).strip())
    await asyncio.to_thread(_forget_ticket_state, git_dir, mirror)


async def park(mirror: Path, path: Path, pool: Path, ticket_id: str) -> Path:
    """Move a scrubbed worktree into the pool under a new, unique name (time first: newest sorts first)."""
    await asyncio.to_thread(pool.mkdir, parents=True, exist_ok=True)
    target = pool / f"{time.time_ns():020d}-{secrets.token_hex(3)}-{ticket_id}"
    # --force twice: a worktree an agent locked moves too (it is ours, and the lock means nothing now).
    await git(mirror, "worktree", "move", "--force", "--force", str(path), str(target))
    return target


async def discard(mirror: Path, path: Path) -> None:
    """Remove a worktree (its branch stays); a directory git does not know is simply deleted."""
    try:
        await git(mirror, "worktree", "remove", "--force", "--force", str(path))
    except (GitError, OSError):
        await asyncio.to_thread(shutil.rmtree, path, True)
        if await asyncio.to_thread((mirror / "HEAD").is_file):
            await git(mirror, "worktree", "prune")


async def claim(mirror: Path, pool: Path, path: Path) -> bool:
    """Move an idle worktree of the pool to path; False when there is none that works."""
    for candidate in await asyncio.to_thread(idle, pool):
        if await worktree_head(candidate, mirror) is None:
            await discard(mirror, candidate)  # broken (an interrupted move): it held no one's work
            continue
        try:
            await git(mirror, "worktree", "move", "--force", "--force", str(candidate), str(path))
        except GitError:
            await discard(mirror, candidate)
            continue
        return True
    return False

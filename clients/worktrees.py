"""`ticketflow worktrees`: the worktrees and idle pool on this worker host, and `--prune` for leftovers.

A ticket's worktree is given back by the release_workspace activity only when the ticket ends DONE or is
cancelled with `ticketflow cancel`. Worktrees of tickets that failed and were never retried, that ended
through Temporal directly, that finished before release existed, or whose workflow is gone (a reset dev
server) stay on disk; so do pool entries beyond a lowered worktree_pool_size. This command lists them
with their ticket's state from Temporal and releases them through the activity's own code
(WorkspaceActivities and activities/worktree_pool.py), under the same mirror lock the workers take.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities import worktree_pool
from activities.git_guard import GitTampered
from activities.gitops import GitError, git, head
from activities.settings import Settings
from activities.workspace import WorkspaceActivities
from clients import tickets
from clients.connect import connect
from clients.watch import human_seconds
from workflows.contracts import workflow_id_for
from workflows.visibility import TICKET_STATE

UNKNOWN = "unknown to Temporal"
# Ended for good: nothing will run in the worktree again. A TERMINATED or TIMED_OUT run ended through
# Temporal directly and cannot be retried by ticketflow; an unknown one has no workflow at all.
RELEASABLE = ("DONE", "CANCELLED", "TERMINATED", "TIMED_OUT", UNKNOWN)
DAY = 86400.0


@dataclass
class Lookup:
    state: str
    running: bool
    ended: datetime | None = None


@dataclass
class Worktree:
    ticket_id: str
    path: str
    repo: str | None  # the mirror's directory name, as in the pool
    branch: str | None  # None when detached or unreadable
    state: str
    size_bytes: int
    modified: datetime
    age_seconds: float
    action: str  # what --prune does: "release" or "keep"
    reason: str
    result: str | None = None  # after --prune: recycled, removed, kept: ..., failed: ...
    saved_commit: str | None = None  # uncommitted work committed onto the branch before release


@dataclass
class Pool:
    repo: str
    path: str
    idle: int
    limit: int
    size_bytes: int
    action: str  # "keep" or "trim N"
    removed: int | None = None


# ------------------------------------------------------------------------------------- looking


async def lookup(client: Client, ticket_id: str) -> Lookup:
    """The ticket's state: ticketflow's for a running or completed run, Temporal's for one that ended
    outside ticketflow (a terminated run keeps whatever TicketState it last had)."""
    try:
        desc = await client.get_workflow_handle(workflow_id_for(ticket_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return Lookup(UNKNOWN, running=False)
        raise tickets.TicketOperationError(f"cannot look up ticket {ticket_id}: {exc.message}") from exc
    status = desc.status.name if desc.status else "UNKNOWN"
    ticket_state = desc.typed_search_attributes.get(TICKET_STATE)
    if status == "RUNNING":
        return Lookup(ticket_state or "?", running=True)
    if status == "COMPLETED":
        return Lookup(ticket_state or "DONE", running=False, ended=desc.close_time)
    state = {"CANCELED": "CANCELLED"}.get(status, status)
    return Lookup(state, running=False, ended=desc.close_time)


@dataclass(frozen=True)
class Rules:
    """What --prune may release beyond DONE/CANCELLED/TERMINATED/TIMED_OUT tickets."""

    failed_older_than: float | None = None  # days; None keeps every FAILED ticket's worktree
    unknown: bool = False  # worktrees of tickets Temporal does not know (a wrong server looks the same)


def plan(found: Lookup, rules: Rules, now: datetime) -> tuple[str, str]:
    """("release" | "keep", why). Only tickets that will never run in their worktree again are released."""
    if found.running:
        return "keep", f"ticket is running ({found.state})"
    if found.state == UNKNOWN and not rules.unknown:
        return "keep", "no such ticket on this Temporal server (release it with --unknown)"
    if found.state in RELEASABLE:
        return "release", f"ticket is {found.state}"
    if found.state != "FAILED":
        return "keep", f"ticket is {found.state}"
    failed_older_than = rules.failed_older_than
    if failed_older_than is None:
        return "keep", "FAILED: `ticketflow retry` resumes in it (prune it with --failed-older-than DAYS)"
    age = (now - found.ended).total_seconds() if found.ended else 0.0
    if age >= failed_older_than * DAY:
        return "release", f"ticket FAILED {human_seconds(age)} ago"
    return "keep", f"ticket FAILED {human_seconds(age)} ago, within --failed-older-than {failed_older_than:g}"


def disk_usage(root: Path) -> tuple[int, float]:
    """Bytes on disk (st_blocks * 512, each hard-linked file once) and the newest mtime under root.

    An os.scandir walk that never follows symlinks: on large trees it is as fast as `du`.
    """
    top = root.lstat()
    total, newest = top.st_blocks * 512, top.st_mtime
    seen: set[tuple[int, int]] = set()
    folders = [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while we walk
                    if stat.S_ISDIR(st.st_mode):
                        folders.append(Path(entry.path))
                    elif st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
                    newest = max(newest, st.st_mtime)
        except OSError:
            continue  # unreadable or removed folder
    return total, newest


def mirror_of(path: Path, mirrors_dir: Path) -> Path | None:
    """The mirror a worktree belongs to, from its `.git` file, if it is one of this host's mirrors."""
    try:
        text = (path / ".git").read_text()
    except OSError:
        return None
    if not text.startswith("gitdir: "):
        return None
    git_dir = path / text.removeprefix("gitdir: ").strip()  # an absolute gitdir replaces path
    mirror = git_dir.parent.parent
    if git_dir.parent.name != "worktrees" or mirror.parent.resolve() != mirrors_dir.resolve():
        return None
    return mirror


async def inspect_worktree(client: Client, settings: Settings, path: Path, rules: Rules) -> Worktree:
    size, newest = await asyncio.to_thread(disk_usage, path)
    now = datetime.now(UTC)
    found = await lookup(client, path.name)
    action, reason = plan(found, rules, now)
    mirror = await asyncio.to_thread(mirror_of, path, settings.mirrors_dir)
    ref = await worktree_pool.worktree_head(path, mirror) if mirror else None
    # Only what git can commit and the workers' code can release is released; the rest is reported.
    if action == "release" and mirror is None:
        action, reason = "keep", f"not a worktree of a mirror in {settings.mirrors_dir}; remove it by hand"
    elif action == "release" and ref is None:
        action, reason = "keep", "git cannot read this worktree; look at it, then remove it by hand"
    branch = ref.removeprefix("refs/heads/") if ref and ref.startswith("refs/heads/") else None
    modified = datetime.fromtimestamp(newest, UTC)
    return Worktree(
        ticket_id=path.name,
        path=str(path),
        repo=mirror.name if mirror else None,
        branch=branch,
        state=found.state,
        size_bytes=size,
        modified=modified,
        age_seconds=max(0.0, (now - modified).total_seconds()),
        action=action,
        reason=reason,
    )


def _folders(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()) if parent.is_dir() else []


async def inspect_pools(settings: Settings) -> list[Pool]:
    pools = []
    limit = settings.worktree_pool_size
    for pool in await asyncio.to_thread(_folders, settings.worktree_pool_dir):
        entries = await asyncio.to_thread(worktree_pool.idle, pool)
        sizes = [(await asyncio.to_thread(disk_usage, entry))[0] for entry in entries]
        extra = len(entries) - limit
        action = f"trim {extra}" if extra > 0 else "keep"
        pools.append(Pool(pool.name, str(pool), len(entries), limit, sum(sizes), action))
    return pools


async def survey(client: Client, settings: Settings, rules: Rules) -> tuple[list[Worktree], list[Pool]]:
    paths = await asyncio.to_thread(_folders, settings.worktrees_dir)
    found = [await inspect_worktree(client, settings, p, rules) for p in paths]
    return found, await inspect_pools(settings)


# ------------------------------------------------------------------------------------- pruning


async def release(workspace: WorkspaceActivities, settings: Settings, tree: Worktree) -> None:
    """Commit what is uncommitted onto the branch (as a cancelled ticket's release does), then recycle
    the worktree into its pool or remove it, exactly as release_workspace does; the branch stays."""
    path = Path(tree.path)
    mirror = settings.mirrors_dir / str(tree.repo)
    branch = tree.branch or ""
    before = await head(path)
    message = f"wip(ticketflow {tree.ticket_id}): uncommitted work saved by `ticketflow worktrees --prune`"
    result = await workspace.give_back(mirror, path, tree.ticket_id, (branch, message))
    if result == "kept":
        tree.result = "kept: its uncommitted work cannot be committed onto its branch (detached HEAD?)"
        return
    after = (await git(mirror, "rev-parse", f"refs/heads/{branch}")).strip() if branch else before
    tree.saved_commit = after if after != before else None
    tree.result = result


async def prune_one(
    client: Client, workspace: WorkspaceActivities, settings: Settings, tree: Worktree, rules: Rules
) -> None:
    # Asked again right before: listing a large host takes a while, and a FAILED ticket may be retried.
    found = await lookup(client, tree.ticket_id)
    tree.state = found.state
    tree.action, tree.reason = plan(found, rules, datetime.now(UTC))
    if tree.action != "release":
        tree.result = f"kept: {tree.reason}"
        return
    try:
        await release(workspace, settings, tree)
    except (GitError, GitTampered, OSError) as exc:
        tree.result = f"failed: {exc}"


async def prune(
    client: Client, settings: Settings, trees: list[Worktree], pools: list[Pool], rules: Rules
) -> list[Pool]:
    """Trim the pools first, so released worktrees fill them back up to the limit with fresh entries;
    returns the pools as they are afterwards."""
    workspace = WorkspaceActivities(settings)
    trimmed = {
        p.repo: await workspace.trim_pool(settings.mirrors_dir / p.repo) for p in pools if p.action != "keep"
    }
    for tree in trees:
        if tree.action == "release":
            await prune_one(client, workspace, settings, tree, rules)
        else:
            tree.result = f"kept: {tree.reason}"
    after = await inspect_pools(settings)
    for pool in after:
        pool.removed = trimmed.get(pool.repo, 0)
    return after


# ------------------------------------------------------------------------------------- output


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _worktree_line(tree: Worktree) -> str:
    line = (
        f"{tree.ticket_id:<24} {tree.state:<20} {human_bytes(tree.size_bytes):>10} "
        f"{human_seconds(tree.age_seconds):>7}  "
    )
    if tree.result is None:
        return line + f"{tree.action}: {tree.reason}"
    if tree.saved_commit:
        saved = f"uncommitted work committed onto {tree.branch} as {tree.saved_commit[:10]}"
        return line + f"{tree.result}; {saved}"
    return line + tree.result


def _pool_line(pool: Pool) -> str:
    line = f"{pool.repo:<34} {pool.idle}/{pool.limit} idle {human_bytes(pool.size_bytes):>10}  "
    if pool.removed is None:
        return line + pool.action
    return line + f"removed {pool.removed} idle worktree(s)"


def _released(trees: list[Worktree]) -> str:
    gone = [t for t in trees if t.result in ("recycled", "removed")]
    saved = sum(1 for t in gone if t.saved_commit)
    freed = human_bytes(sum(t.size_bytes for t in gone if t.result == "removed"))
    return (
        f"released {len(gone)} worktree(s) ({freed} removed, the rest recycled into the pool); "
        f"{saved} had uncommitted work, now committed onto its branch"
    )


def render_text(settings: Settings, trees: list[Worktree], pools: list[Pool]) -> str:
    total = sum(t.size_bytes for t in trees)
    lines = [f"{len(trees)} worktree(s) in {settings.worktrees_dir}, {human_bytes(total)}"]
    lines += [_worktree_line(tree) for tree in trees]
    pooled = sum(p.size_bytes for p in pools)
    lines.append(
        f"pool in {settings.worktree_pool_dir}: {sum(p.idle for p in pools)} idle worktree(s), "
        f"{human_bytes(pooled)}, worktree_pool_size {settings.worktree_pool_size} per repository"
    )
    lines += [_pool_line(pool) for pool in pools]
    if any(t.result is not None for t in trees):
        lines.append(_released(trees))
    return "\n".join(lines)


def as_dict(settings: Settings, trees: list[Worktree], pools: list[Pool]) -> dict[str, Any]:
    return {
        "worktrees_dir": str(settings.worktrees_dir),
        "worktree_pool_dir": str(settings.worktree_pool_dir),
        "worktree_pool_size": settings.worktree_pool_size,
        "worktrees": [asdict(t) for t in trees],
        "pools": [asdict(p) for p in pools],
    }


# ------------------------------------------------------------------------------------- command


async def cmd_worktrees(args: argparse.Namespace, settings: Settings) -> int:
    days: float | None = args.failed_older_than
    if days is not None and days < 0:
        raise tickets.TicketOperationError("--failed-older-than: DAYS must be 0 or more")
    client = await connect(settings)
    rules = Rules(failed_older_than=days, unknown=args.unknown)
    trees, pools = await survey(client, settings, rules)
    if args.prune:
        pools = await prune(client, settings, trees, pools, rules)
    if args.json:
        print(json.dumps(as_dict(settings, trees, pools), indent=2, default=str))
    else:
        print(render_text(settings, trees, pools))
    failed = [t.ticket_id for t in trees if t.result and t.result.startswith("failed")]
    if failed:
        raise tickets.TicketOperationError(f"could not release the worktree(s) of {', '.join(failed)}")
    return 0

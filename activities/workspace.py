"""prepare_workspace and release_workspace: a cached bare mirror per repository, a git worktree per ticket.

Mirrors live under settings.mirrors_dir and are shared by every ticket of a repository; a ticket's
worktree (and its branch, inside the mirror's ref store) survives retries and worker restarts, so the
agent's WIP commits are never thrown away by a re-run of this activity. A DONE or CANCELLED ticket's
worktree goes back to its repository's pool of idle worktrees (activities/worktree_pool.py), from which
the next ticket's worktree is claimed; its branch stays in the mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import stack, worktree_pool
from activities.githosts import git_host_for
from activities.gitops import GitError, branch_lock, git, remove_locks, stale_ref_locks
from activities.heartbeat import with_heartbeats
from activities.redact import redact
from activities.repos import RepoError, ResolvedRepo, resolve_repo
from activities.settings import Settings
from workflows.contracts import (
    ReleaseRequest,
    ReleaseResult,
    Ticket,
    TicketState,
    Workspace,
    WorkspaceRequest,
)

log = logging.getLogger("ticketflow.workspace")

CLONE_TIMEOUT = 15 * 60
# A ref lock this old in a mirror we hold locked is a killed git's (seconds).
STALE_LOCK_SECONDS = 30.0
FETCH_TIMEOUT = 10 * 60
# Plain fetch refspec, not --mirror: a mirror fetch would delete the ticket branches kept in refs/heads.
FETCH_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
# Shared by every worktree of the mirror: check runs must not leave caches for commit_all to pick up.
EXCLUDES = "__pycache__/\n*.pyc\n.pytest_cache/\n.aider*\n"
IDENTITY = {"user.name": "ticketflow", "user.email": "ticketflow@localhost"}


def repo_not_found(message: str) -> ApplicationError:
    return ApplicationError(message, type="RepoNotFound", non_retryable=True)


def choose_base(ticket: Ticket, repo: ResolvedRepo) -> str:
    """The ticket's base branch, unless it is the default and the repo config names another."""
    if ticket.base_branch == "main" and repo.base_branch:
        return repo.base_branch
    return ticket.base_branch


def _lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextlib.asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock on path, so worker processes sharing a state dir take turns."""
    waiter = asyncio.ensure_future(asyncio.to_thread(_lock_file, path))
    try:
        fd = await asyncio.shield(waiter)
    except BaseException:
        # The thread cannot be interrupted; release the lock as soon as it is granted.
        waiter.add_done_callback(lambda f: None if f.cancelled() or f.exception() else os.close(f.result()))
        raise
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


async def _clone_mirror(url: str, mirror: Path, secrets: list[str], env: dict[str, str]) -> None:
    """Clone into a temporary name and rename, so an interrupted clone never looks like a mirror."""
    tmp = mirror.with_name(mirror.name + ".partial")
    await asyncio.to_thread(shutil.rmtree, tmp, True)
    try:
        # No repository around: git must not discover one. --template= (empty): no sample hooks or
        # template info/ files; hooks never run anyway (git_guard pins core.hooksPath).
        await git(
            None,
            "clone",
            "--bare",
            "--quiet",
            "--template=",
            "--",
            url,
            str(tmp.absolute()),
            env=env,
            timeout=CLONE_TIMEOUT,
        )
    except GitError as exc:
        raise repo_not_found(redact(f"cannot clone {url}: {exc.stderr.strip()}", secrets)) from exc
    await git(tmp, "config", "remote.origin.fetch", FETCH_REFSPEC)
    for key, value in IDENTITY.items():
        await git(tmp, "config", key, value)  # the mirror is ours alone: its identity is ticketflow's
    await asyncio.to_thread((tmp / "info").mkdir, exist_ok=True)
    await asyncio.to_thread((tmp / "info" / "exclude").write_text, EXCLUDES)
    await asyncio.to_thread(shutil.rmtree, mirror, True)  # a directory without HEAD is no mirror
    await asyncio.to_thread(tmp.rename, mirror)


async def sync_mirror(url: str, mirror: Path, secrets: list[str], env: dict[str, str] | None = None) -> None:
    """Clone or fetch the mirror; env carries the git host's credential helper for private repos."""
    env = env or {}
    await asyncio.to_thread(mirror.parent.mkdir, parents=True, exist_ok=True)
    if not await asyncio.to_thread((mirror / "HEAD").is_file):
        await _clone_mirror(url, mirror, secrets, env)
    # From the URL ticketflow resolved, not the remote.origin.url in the mirror's config; no tags, so only
    # refs/remotes/origin/* move (the tamper check watches every other ref).
    await git(
        mirror,
        "fetch",
        "--prune",
        "--no-tags",
        "--quiet",
        "--",
        url,
        FETCH_REFSPEC,
        env=env,
        timeout=FETCH_TIMEOUT,
    )


def recover_mirror(mirror: Path) -> None:
    """Undo what killed gits left in the mirror; the caller holds the mirror lock, so no live git of ours
    is writing it (agents' commits in worktrees take only their own branch's locks, briefly)."""
    stale = stale_ref_locks(mirror, STALE_LOCK_SECONDS)
    if stale:
        remove_locks(stale)
        log.warning("removed %d ref lock(s) a killed git left in %s", len(stale), mirror)
    clear_interrupted_adds(mirror)


def clear_interrupted_adds(mirror: Path) -> list[str]:
    """Forget worktrees whose `git worktree add` was killed; returns their names.

    `worktree add` first registers the worktree with a null HEAD and a `locked` file saying
    "initializing", and fills both in at the end. Killed in between (worker SIGKILLs in tests/chaos),
    it leaves an entry `worktree prune` keeps (it is locked) and whose HEAD names no object, so every
    later fetch of the mirror fails ("did not send all necessary objects"). Every add runs under the
    mirror lock, which the caller holds, so an entry still initializing now is such a leftover.
    """
    cleared = []
    for entry in sorted((mirror / "worktrees").glob("*/locked")):
        with contextlib.suppress(OSError):
            if entry.read_text().strip() == "initializing":
                shutil.rmtree(entry.parent)
                cleared.append(entry.parent.name)
    if cleared:
        log.warning("forgot worktree(s) %s of %s: their `git worktree add` was killed", cleared, mirror)
    return cleared


async def base_tip(mirror: Path, base: str, repo_name: str) -> str:
    ref = f"refs/remotes/origin/{base}^{{commit}}"
    try:
        return (await git(mirror, "rev-parse", "--verify", "--quiet", ref)).strip()
    except GitError as exc:
        raise repo_not_found(f"repository {repo_name!r} has no branch {base!r}") from exc


async def _is_worktree_on(path: Path, branch: str, mirror: Path) -> bool:
    """True when path is a working worktree of this mirror with branch checked out."""
    return await worktree_pool.worktree_head(path, mirror) == f"refs/heads/{branch}"


async def _branch_exists(mirror: Path, branch: str) -> bool:
    try:
        await git(mirror, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
    except GitError:
        return False
    return True


async def _merge_base(path: Path, base: str) -> str:
    return (await git(path, "merge-base", "HEAD", f"refs/remotes/origin/{base}")).strip()


async def _check_out(path: Path, branch: str, base_sha: str, exists: bool) -> None:
    """Put a claimed (clean, detached) worktree on the ticket's branch: only differing files are written."""
    if exists:
        await git(path, "checkout", "--force", "--quiet", branch, "--")
    else:
        # -b, not -B: an existing branch (the agent's commits) is never reset. From the resolved commit,
        # not origin/<base>, so the branch does not track the base.
        await git(path, "checkout", "--force", "--quiet", "-b", branch, base_sha, "--")
    await git(path, "clean", "-ffdxq")  # directories a checkout leaves behind (ignored files in them)


async def _claim_from_pool(
    mirror: Path, pool: Path, path: Path, branch: str, base_sha: str, existed: bool
) -> bool:
    """Check the ticket's branch out in an idle worktree of the pool, moved to path; False if none."""
    if not await worktree_pool.claim(mirror, pool, path):
        return False
    try:
        await _check_out(path, branch, base_sha, existed)
    except GitError as exc:
        activity.logger.warning("claimed worktree %s is unusable, adding a new one: %s", path, exc)
        await worktree_pool.discard(mirror, path)
        return False
    return True


async def ensure_worktree(
    mirror: Path, path: Path, branch: str, base: str, base_sha: str, pool: Path | None = None
) -> str:
    """Create (or reuse) the ticket's worktree; returns the commit its branch started from.

    A new one is an idle worktree claimed from pool when there is one, else a `git worktree add`.
    """
    if await _is_worktree_on(path, branch, mirror):
        return await _merge_base(path, base)  # a retry: keep the agent's work untouched
    if await asyncio.to_thread(path.exists):
        await asyncio.to_thread(shutil.rmtree, path)  # broken leftovers; commits live in the mirror
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    await git(mirror, "worktree", "prune")  # forget worktrees whose directories are gone
    # The branch is this ticket's alone and its mirror is locked: a lock on it is a killed git's.
    if await asyncio.to_thread(remove_locks, [branch_lock(mirror, branch)]):
        activity.logger.warning("removed a stale lock of branch %s left by a killed attempt", branch)
    existed = await _branch_exists(mirror, branch)
    if pool is None or not await _claim_from_pool(mirror, pool, path, branch, base_sha, existed):
        await _add_worktree(mirror, path, branch, base_sha)
    return await _merge_base(path, base) if existed else base_sha


async def _add_worktree(mirror: Path, path: Path, branch: str, base_sha: str) -> None:
    if await _branch_exists(mirror, branch):  # asked again: a failed claim may have created it
        await git(mirror, "worktree", "add", "--quiet", str(path), branch)
    else:
        # Start from the resolved commit, not origin/<base>, so the branch does not track the base.
        await git(mirror, "worktree", "add", "--quiet", "-b", branch, str(path), base_sha)


async def context_summary(path: Path, info: stack.StackInfo, test_command: str | None) -> str:
    files = (await git(path, "ls-files", "-z")).split("\0")
    commits = (await git(path, "log", "--oneline", "--no-decorate", "--no-color", "-10")).splitlines()
    readme = await asyncio.to_thread(stack.readme_head, path)
    return stack.render_context(info, test_command, readme, [f for f in files if f], commits)


class WorkspaceActivities:
    # One lock per mirror path, shared by all instances in this process (the file lock covers others).
    _mirror_locks: ClassVar[dict[str, asyncio.Lock]] = {}
    # When each mirror's last fetch started (monotonic clock), to coalesce fetches of waiting tickets.
    _fetch_started: ClassVar[dict[str, float]] = {}

    def __init__(self, settings: Settings, heartbeat_every: float = 5.0) -> None:
        self._settings = settings
        self._heartbeat_every = heartbeat_every

    @contextlib.asynccontextmanager
    async def _locked(self, mirror: Path) -> AsyncIterator[None]:
        lock = self._mirror_locks.setdefault(str(mirror), asyncio.Lock())
        async with lock, file_lock(mirror.with_name(mirror.name + ".lock")):
            yield

    def _resolve(self, name: str) -> ResolvedRepo:
        try:
            return resolve_repo(name, self._settings)
        except RepoError as exc:
            raise repo_not_found(str(exc)) from exc

    async def _checkout(self, repo: ResolvedRepo, mirror: Path, base: str, path: Path, branch: str) -> str:
        """Fetch the mirror and create or reuse the worktree; returns the base commit."""
        requested = time.monotonic()
        async with self._locked(mirror):
            await asyncio.to_thread(recover_mirror, mirror)
            # A fetch that started after this ticket asked is as fresh as one it would run itself:
            # tickets queued behind one fetch share it instead of fetching one after another.
            if self._fetch_started.get(str(mirror), float("-inf")) < requested:
                started = time.monotonic()
                credentials = git_host_for(repo, self._settings).push_env()
                await sync_mirror(repo.url, mirror, self._settings.secret_values(), credentials)
                self._fetch_started[str(mirror)] = started  # only a fetch that worked can be shared
            base_sha = await base_tip(mirror, base, repo.name)
            pool = worktree_pool.pool_for(self._settings.worktree_pool_dir, mirror)
            return await ensure_worktree(mirror, path, branch, base, base_sha, pool)

    @activity.defn(name="prepare_workspace")
    async def prepare_workspace(self, req: WorkspaceRequest) -> Workspace:
        ticket, secrets = req.ticket, self._settings.secret_values()
        repo = self._resolve(ticket.repo)
        base = choose_base(ticket, repo)
        mirror = self._settings.mirrors_dir / repo.key
        path = self._settings.worktrees_dir / ticket.id
        # Heartbeat while queueing for the lock too: another ticket may be cloning a large repository.
        checkout = self._checkout(repo, mirror, base, path, ticket.branch)
        base_commit = await with_heartbeats(checkout, self._heartbeat_every, "preparing worktree")
        activity.heartbeat("worktree ready")
        # The one decision of the ticket's test command (activities/stack.py); run_checks re-checks it.
        tests = await asyncio.to_thread(
            stack.decide_test_command, path, ticket.test_command, repo.test_command, repo.name
        )
        info = stack.StackInfo(tests.stack, tests.command, tests.reason)
        summary = await context_summary(path, info, tests.command)
        return Workspace(
            path=str(path),
            branch=ticket.branch,
            base_branch=base,
            base_commit=base_commit,
            repo_url=repo.url,
            host_queue=self._settings.host_queue,
            git_host=repo.host,
            test_command=tests.command,
            stack=info.stack,
            test_command_source=tests.source,
            test_command_reason=redact(tests.reason, secrets),
            context_summary=redact(summary, secrets),
        )

    @activity.defn(name="release_workspace")
    async def release_workspace(self, req: ReleaseRequest) -> ReleaseResult:
        """Recycle a DONE or CANCELLED ticket's worktree into the pool, or remove it; never its branch.

        Idempotent: a retry after the worktree has moved finds it missing, and a pooled worktree left
        broken by an interrupted move is discarded by the next claim (worktree_pool.claim).
        """
        release = self._release(req)
        action = await with_heartbeats(release, self._heartbeat_every, "releasing worktree")
        activity.logger.info("worktree of %s %s", req.ticket_id, action)
        return ReleaseResult(action=action)

    async def _release(self, req: ReleaseRequest) -> str:
        path = Path(req.workspace.path)
        if self._settings.keep_worktrees:
            return "kept"
        if not await asyncio.to_thread(path.exists):
            return "missing"
        if path.parent.resolve() != self._settings.worktrees_dir.resolve():
            return "kept"  # not where this worker puts worktrees (its state_dir changed): not ours to delete
        mirror = self._settings.mirrors_dir / ResolvedRepo(name=req.ticket_id, url=req.workspace.repo_url).key
        if await worktree_pool.worktree_head(path, mirror) is None:
            async with self._locked(mirror):
                await worktree_pool.discard(mirror, path)  # broken leftovers; commits live in the mirror
            return "removed"
        save = None
        if req.state is TicketState.CANCELLED:
            message = f"wip(ticketflow {req.ticket_id}): uncommitted work at cancellation"
            save = (req.workspace.branch, message)
        return await self.give_back(mirror, path, req.ticket_id, save)

    async def give_back(
        self, mirror: Path, path: Path, ticket_id: str, save: tuple[str, str] | None = None
    ) -> str:
        """Recycle the worktree into its pool or remove it ("recycled" / "removed"). With save = (branch,
        message), uncommitted work is first committed onto the branch; "kept" if it cannot go there."""
        if save is not None and not await worktree_pool.save_uncommitted(path, *save):
            return "kept"  # work that cannot go onto the branch is left where it is
        return await self._recycle_or_remove(mirror, path, ticket_id)

    async def trim_pool(self, mirror: Path) -> int:
        """Remove the oldest idle worktrees beyond worktree_pool_size; returns how many."""
        pool = worktree_pool.pool_for(self._settings.worktree_pool_dir, mirror)
        async with self._locked(mirror):  # no claim or park runs on this pool meanwhile
            extra = (await asyncio.to_thread(worktree_pool.idle, pool))[self._settings.worktree_pool_size :]
            for entry in extra:
                await worktree_pool.discard(mirror, entry)
        return len(extra)

    async def _recycle_or_remove(self, mirror: Path, path: Path, ticket_id: str) -> str:
        pool = worktree_pool.pool_for(self._settings.worktree_pool_dir, mirror)
        size = self._settings.worktree_pool_size

        def has_room() -> bool:
            return len(worktree_pool.idle(pool)) < size

        recycle = await asyncio.to_thread(has_room)
        if recycle:
            # Outside the lock: the worktree is this ticket's alone, and cleaning a big tree takes a while.
            try:
                await worktree_pool.scrub(path, mirror)
            except GitError as exc:
                activity.logger.warning("cannot clean worktree %s, removing it: %s", path, exc)
                recycle = False
        async with self._locked(mirror):
            if recycle and await asyncio.to_thread(has_room):
                try:
                    await worktree_pool.park(mirror, path, pool, ticket_id)
                    return "recycled"
                except GitError as exc:
                    activity.logger.warning("cannot move worktree %s into the pool: %s", path, exc)
            await worktree_pool.discard(mirror, path)
            return "removed"

"""Workspace: a ticket's worktree from the cached mirror against a fresh clone, on a generated large repo.

A bare "remote" with `--files` generated source files (20,000 by default, a few hundred bytes each, in
nested packages, with some history) stands in for a real project. Every side ends with the same thing,
a checked-out working tree of main on a new branch; three are measured in the same run:
- clone (the baseline): a fresh `git clone` over `file://` (the transport a remote clone uses; a plain
  path would hard-link objects, which no real remote does) and `git switch -c`;
- cold: prepare_workspace's git work with an empty pool: `sync_mirror` (a fetch into the cached bare
  mirror), `base_tip` and `ensure_worktree` (`git worktree add -b ...`), from activities/workspace.py;
- pooled: the same, with the worktree claimed from the repository's pool (`git worktree move`, then a
  checkout of the new branch that writes only the files that differ), after the previous ticket on the
  repository was released into it. That is the steady state of a busy repository; `ratio` (clone /
  pooled) is the headline, `cold_ratio` (clone / cold) the first ticket after a pool went empty.
To make "the files that differ" honest, each round main moves on by one commit changing
`--base-changes` files, and each pooled ticket commits changes to `--ticket-changes` files and leaves an
untracked file and ignored build output (`__pycache__`) behind before its release (what
release_workspace does with room in the pool: worktree_pool.scrub + park; timed, but outside the
ratio, since it runs after the ticket is DONE). Each side runs `--rounds` times in a rotating order;
medians count. The transfer alone is reported too (the mirror's fetch against a `--no-checkout` clone):
the part a network remote makes slow and the mirror saves. The first mirror clone is a one-off per
repository per worker and is reported separately.
Run: `.venv/bin/python -m bench.workspace`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from activities import worktree_pool
from activities.workspace import base_tip, ensure_worktree, sync_mirror
from bench.harness import emit, machine

TARGET_RATIO = 10.0
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "init.defaultBranch=main"]


def git(cwd: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True)


def module_path(root: Path, number: int) -> Path:
    return root / "src" / f"pkg{number // 1000:02d}" / f"mod{(number // 100) % 10}" / f"file_{number:05d}.py"


def generate_repo(root: Path, files: int, commits: int) -> tuple[Path, Path]:
    """A bare repository with `files` files in 100-file packages, built over `commits` commits; returns
    it and the working copy it was pushed from (which moves main on later)."""
    seed, remote = root / "seed", root / "remote.git"
    seed.mkdir(parents=True)
    git(seed, "init", "-q")
    per_commit = max(1, files // commits)
    for number in range(files):
        path = module_path(seed, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'"""Generated module {number}."""\n\n\ndef value_{number}() -> int:\n    return {number}\n'
        )
        if (number + 1) % per_commit == 0:
            git(seed, "add", "-A")
            git(seed, "commit", "-q", "-m", f"add files up to {number}")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "--allow-empty", "-m", "last files")
    git(root, "clone", "-q", "--bare", str(seed), str(remote))
    return remote, seed


def edit_files(root: Path, files: int, count: int, offset: int, tag: str) -> None:
    """Append a line to `count` generated modules, spread over the tree from `offset`."""
    step = max(1, files // max(1, count))
    for n in range(count):
        path = module_path(root, (offset + n * step) % files)
        path.write_text(path.read_text() + f"# {tag}\n")


def move_base(seed: Path, remote: Path, files: int, count: int, number: int) -> None:
    """main moves on between tickets, as on a busy repository."""
    if count <= 0:
        return
    edit_files(seed, files, count, number * 7, f"base change {number}")
    git(seed, "commit", "-q", "-am", f"base change {number}")
    git(seed, "push", "-q", str(remote), "HEAD:main")


def ticket_work(path: Path, files: int, count: int, number: int) -> None:
    """What an agent and its test runs leave: a commit, an untracked file, ignored build output."""
    edit_files(path, files, count, number * 13 + 3, f"ticket {number}")
    git(path, "commit", "-q", "-am", f"ticket {number}")
    (path / "notes.txt").write_text("agent notes\n")
    for n in range(0, files, max(1, files // 200)):
        cache = module_path(path, n).parent / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / f"file_{n:05d}.cpython-311.pyc").write_bytes(b"\0" * 512)


async def worktree_side(
    url: str, mirror: Path, path: Path, branch: str, pool: Path | None
) -> tuple[float, float]:
    """Seconds for the whole worktree, and for the part that talks to the remote (the fetch)."""
    started = time.perf_counter()
    await sync_mirror(url, mirror, [])
    fetched = time.perf_counter()
    sha = await base_tip(mirror, "main", "bench")
    await ensure_worktree(mirror, path, branch, "main", sha, pool)
    return time.perf_counter() - started, fetched - started


async def release(mirror: Path, path: Path, pool: Path, name: str) -> float:
    """release_workspace with room in the pool: make the worktree clean and move it into the pool."""
    started = time.perf_counter()
    await worktree_pool.scrub(path, mirror)
    await worktree_pool.park(mirror, path, pool, name)
    return time.perf_counter() - started


def clone_side(url: str, clones: Path, branch: str) -> tuple[float, float]:
    """Seconds for the whole clone, and for its transfer alone (a `--no-checkout` clone)."""
    started = time.perf_counter()
    git(clones, "clone", "-q", url, branch)
    git(clones / branch, "switch", "-q", "-c", branch)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    git(clones, "clone", "-q", "--no-checkout", url, f"{branch}-bare")
    return whole, time.perf_counter() - started


async def run(
    files: int, commits: int, rounds: int, base_changes: int, ticket_changes: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        remote, seed = generate_repo(root, files, commits)
        generate_s = time.perf_counter() - started
        print(f"generated {files} files in {generate_s:.1f}s", flush=True)
        url = remote.as_uri()
        mirror, worktrees, clones = root / "mirrors" / "remote.git", root / "worktrees", root / "clones"
        pool = worktree_pool.pool_for(root / "pool", mirror)
        clones.mkdir()
        started = time.perf_counter()
        await sync_mirror(url, mirror, [])
        first_mirror_s = time.perf_counter() - started
        # The ticket before the first pooled one: worked on, then released into the pool.
        previous = worktrees / "pooled-warmup"
        await worktree_side(url, mirror, previous, "pooled-warmup", None)
        ticket_work(previous, files, ticket_changes, -1)
        await release(mirror, previous, pool, "pooled-warmup")
        times: dict[str, list[tuple[float, float]]] = {"clone": [], "cold": [], "pooled": []}
        releases: list[float] = []
        for number in range(rounds):
            move_base(seed, remote, files, base_changes, number)
            cold, pooled = f"cold-{number}", f"pooled-{number}"
            sides: list[tuple[str, Callable[[], Awaitable[tuple[float, float]]]]] = [
                ("clone", partial(asyncio.to_thread, clone_side, url, clones, f"clone-{number}")),
                ("cold", partial(worktree_side, url, mirror, worktrees / cold, cold, None)),
                ("pooled", partial(worktree_side, url, mirror, worktrees / pooled, pooled, pool)),
            ]
            # Rotate the order so page-cache warmth and machine drift favour no side.
            for name, side in sides[number % 3 :] + sides[: number % 3]:
                times[name].append(await side())
            if worktree_pool.idle(pool):
                raise RuntimeError("the pooled side added a worktree instead of claiming the idle one")
            ticket_work(worktrees / pooled, files, ticket_changes, number)
            releases.append(await release(mirror, worktrees / pooled, pool, pooled))
            print(
                f"round {number + 1}: clone {times['clone'][-1][0]:.2f}s, cold worktree "
                f"{times['cold'][-1][0]:.2f}s, pooled worktree {times['pooled'][-1][0]:.2f}s "
                f"(release {releases[-1]:.2f}s)",
                flush=True,
            )
    whole = {name: statistics.median(t[0] for t in side) for name, side in times.items()}
    fetch_s = statistics.median(t[1] for t in times["cold"] + times["pooled"])
    transfer_s = statistics.median(t[1] for t in times["clone"])
    ratio = whole["clone"] / whole["pooled"]
    return {
        "benchmark": "workspace",
        "files": files,
        "commits": commits,
        "rounds": rounds,
        "base_changes": base_changes,
        "ticket_changes": ticket_changes,
        "generate_s": round(generate_s, 1),
        "first_mirror_clone_s": round(first_mirror_s, 2),
        "fresh_clone_s": round(whole["clone"], 3),
        "cold_worktree_s": round(whole["cold"], 3),
        "pooled_worktree_s": round(whole["pooled"], 3),
        "headline": "ratio = fresh clone / worktree claimed from the pool (steady state of a busy repo)",
        "ratio": round(ratio, 2),
        "cold_ratio": round(whole["clone"] / whole["cold"], 2),
        # After the ticket is DONE, off its critical path: reset, clean, move into the pool.
        "release_s": round(statistics.median(releases), 3),
        # What the mirror saves is the transfer. Over file:// that is a local pack copy, so these are
        # the part a network remote would make slower.
        "mirror_fetch_s": round(fetch_s, 3),
        "clone_transfer_s": round(transfer_s, 3),
        "transfer_ratio": round(transfer_s / fetch_s, 2),
        "target": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "machine": machine(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-changes", type=int, default=50, help="files main changes per round")
    parser.add_argument("--ticket-changes", type=int, default=10, help="files each ticket changes")
    args = parser.parse_args(argv)
    emit(asyncio.run(run(args.files, args.commits, args.rounds, args.base_changes, args.ticket_changes)))


if __name__ == "__main__":
    main()

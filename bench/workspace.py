"""Workspace: a ticket's worktree from the cached mirror against a fresh clone, on a generated large repo.

A bare "remote" with `--files` generated source files (20,000 by default, a few hundred bytes each, in
nested packages, with some history) stands in for a real project. Both sides end with the same thing,
a checked-out working tree of main on a new branch:
- mirror: what prepare_workspace does for every ticket after the first: `sync_mirror` (a fetch into the
  cached bare mirror) and `ensure_worktree` (`git worktree add -b ...`), from activities/workspace.py;
- clone: a fresh `git clone` over `file://` (the transport a remote clone uses; a plain path would
  hard-link objects, which no real remote does) and `git switch -c`.
Each side runs `--rounds` times with a new branch each time; medians count. Both sides then check out
the same 20,000 files, so the transfer is also reported alone (the mirror's fetch against a
`--no-checkout` clone): that is the part a network remote makes slow and the mirror saves. The first
mirror clone is a one-off per repository per worker and is reported separately.
Run: `.venv/bin/python -m bench.workspace`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activities.workspace import base_tip, ensure_worktree, sync_mirror
from bench.harness import emit, machine

TARGET_RATIO = 10.0
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "init.defaultBranch=main"]


def git(cwd: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True)


def generate_repo(root: Path, files: int, commits: int) -> Path:
    """A bare repository with `files` files in 100-file packages, built over `commits` commits."""
    seed, remote = root / "seed", root / "remote.git"
    seed.mkdir(parents=True)
    git(seed, "init", "-q")
    per_commit = max(1, files // commits)
    for number in range(files):
        package = seed / "src" / f"pkg{number // 1000:02d}" / f"mod{(number // 100) % 10}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"file_{number:05d}.py").write_text(
            f'"""Generated module {number}."""\n\n\ndef value_{number}() -> int:\n    return {number}\n'
        )
        if (number + 1) % per_commit == 0:
            git(seed, "add", "-A")
            git(seed, "commit", "-q", "-m", f"add files up to {number}")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "--allow-empty", "-m", "last files")
    git(root, "clone", "-q", "--bare", str(seed), str(remote))
    return remote


async def mirror_side(url: str, mirror: Path, worktrees: Path, branch: str) -> tuple[float, float]:
    """Seconds for the whole worktree, and for the part that talks to the remote (the fetch)."""
    started = time.perf_counter()
    await sync_mirror(url, mirror, [])
    fetched = time.perf_counter()
    sha = await base_tip(mirror, "main", "bench")
    await ensure_worktree(mirror, worktrees / branch, branch, "main", sha)
    return time.perf_counter() - started, fetched - started


def clone_side(url: str, clones: Path, branch: str) -> tuple[float, float]:
    """Seconds for the whole clone, and for its transfer alone (a `--no-checkout` clone)."""
    started = time.perf_counter()
    git(clones, "clone", "-q", url, branch)
    git(clones / branch, "switch", "-q", "-c", branch)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    git(clones, "clone", "-q", "--no-checkout", url, f"{branch}-bare")
    return whole, time.perf_counter() - started


async def run(files: int, commits: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        remote = generate_repo(root, files, commits)
        generate_s = time.perf_counter() - started
        print(f"generated {files} files in {generate_s:.1f}s", flush=True)
        url = remote.as_uri()
        mirror, worktrees, clones = root / "mirrors" / "remote.git", root / "worktrees", root / "clones"
        clones.mkdir()
        started = time.perf_counter()
        await sync_mirror(url, mirror, [])
        first_mirror_s = time.perf_counter() - started
        mirror_times: list[tuple[float, float]] = []
        clone_times: list[tuple[float, float]] = []
        for number in range(rounds):
            branch = f"ticket-{number}"
            # Alternate the order so page-cache warmth favours neither side.
            if number % 2:
                clone_times.append(clone_side(url, clones, branch))
                mirror_times.append(await mirror_side(url, mirror, worktrees, branch))
            else:
                mirror_times.append(await mirror_side(url, mirror, worktrees, branch))
                clone_times.append(clone_side(url, clones, branch))
            print(
                f"round {number + 1}: mirror {mirror_times[-1][0]:.2f}s, clone {clone_times[-1][0]:.2f}s",
                flush=True,
            )
    mirror_s, clone_s = (statistics.median(t[0] for t in times) for times in (mirror_times, clone_times))
    fetch_s, transfer_s = (statistics.median(t[1] for t in times) for times in (mirror_times, clone_times))
    ratio = clone_s / mirror_s
    return {
        "benchmark": "workspace",
        "files": files,
        "commits": commits,
        "rounds": rounds,
        "generate_s": round(generate_s, 1),
        "first_mirror_clone_s": round(first_mirror_s, 2),
        "mirror_worktree_s": round(mirror_s, 3),
        "fresh_clone_s": round(clone_s, 3),
        "ratio": round(ratio, 2),
        # Both sides check out the same files; what the mirror saves is the transfer. Over file:// that
        # is a local pack copy, so these are the part a network remote would make slower.
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
    args = parser.parse_args(argv)
    emit(asyncio.run(run(args.files, args.commits, args.rounds)))


if __name__ == "__main__":
    main()

"""A git repository on disk acting as the remote; pull requests are JSON files next to its objects.

Records live in `<git dir>/ticketflow-pulls/<number>.json`. Numbering and the find-or-create step run
under one fcntl lock, so concurrent tickets (even in other worker processes) never share a number and a
retried activity never opens a second PR for the same branch.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from activities.githosts.base import GitHostError, PullRequestSpec
from activities.gitops import GitError, git
from workflows.contracts import PullRequestRef

PULLS_DIR = "ticketflow-pulls"


def local_repo_path(url: str) -> Path:
    """The on-disk repository behind a path or file:// URL; other URLs are not local."""
    if url.startswith("file://"):
        url = urlsplit(url).path
    elif "://" in url:
        raise GitHostError(f"{url!r} is not a local repository", kind="rejected", retryable=False)
    path = Path(url).expanduser()
    # A non-bare repository keeps records in .git, so they never show up as untracked files.
    return path / ".git" if (path / ".git").is_dir() else path


class LocalHost:
    name = "local"

    def __init__(self, repo_url: str) -> None:
        self.git_dir = local_repo_path(repo_url)
        self.pulls_dir = self.git_dir / PULLS_DIR

    def push_env(self) -> dict[str, str]:
        return {}

    async def find_open_pr(self, branch: str, base: str) -> PullRequestRef | None:
        records = await asyncio.to_thread(self._read_all)
        record = _open_record(records, branch, base)
        return None if record is None else self._ref(record, await self._tip(branch), created=False)

    async def open_pr(self, spec: PullRequestSpec) -> PullRequestRef:
        tip = await self._tip(spec.head)
        if tip is None:
            raise GitHostError(f"branch {spec.head!r} is not in the remote", kind="rejected", retryable=False)
        record, created = await asyncio.to_thread(self._find_or_create, spec, tip)
        return self._ref(record, tip, created=created)

    async def _tip(self, branch: str) -> str | None:
        try:
            out = await git(
                self.git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"
            )
        except GitError:
            return None
        return out.strip() or None

    def _ref(self, record: dict[str, Any], tip: str | None, *, created: bool) -> PullRequestRef:
        number = int(record["number"])
        return PullRequestRef(
            url=f"file://{self.git_dir}#pull/{number}",
            number=number,
            branch=str(record["head"]),
            host=self.name,
            created=created,
            head_commit=tip,
        )

    # ---- blocking file work: only ever called through asyncio.to_thread

    def _read_all(self) -> list[dict[str, Any]]:
        if not self.pulls_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.pulls_dir.glob("*.json"))]

    def _find_or_create(self, spec: PullRequestSpec, tip: str) -> tuple[dict[str, Any], bool]:
        self.pulls_dir.mkdir(parents=True, exist_ok=True)
        with open(self.pulls_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._read_all()
            existing = _open_record(records, spec.head, spec.base)
            if existing is not None:
                return existing, False
            record = _new_record(spec, tip, 1 + max((int(r["number"]) for r in records), default=0))
            _write_atomic(self.pulls_dir / f"{record['number']}.json", record)
            return record, True


def _open_record(records: list[dict[str, Any]], head: str, base: str) -> dict[str, Any] | None:
    return next(
        (r for r in records if r["head"] == head and r["base"] == base and r["state"] == "open"), None
    )


def _new_record(spec: PullRequestSpec, tip: str, number: int) -> dict[str, Any]:
    fields = asdict(spec)
    fields["labels"] = list(spec.labels)
    return {
        "number": number,
        **fields,
        "state": "open",
        "created_at": datetime.now(UTC).isoformat(),
        "head_commit": tip,
    }


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    # Readers never see a half-written record: they glob *.json, and the temporary name is not one.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)

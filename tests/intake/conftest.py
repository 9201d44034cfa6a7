"""Builders for ticket sources on disk: Backlog.md folders and beads JSONL files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.repos import make_remote

BacklogWriter = Callable[..., Path]


def ticket_text(
    ticket_id: str, *, priority: Any = 3, depends_on: list[str] | None = None, **extra: Any
) -> str:
    meta: dict[str, Any] = {"id": ticket_id, "title": f"Ticket {ticket_id}", "priority": priority, **extra}
    if depends_on:
        meta["depends_on"] = depends_on
    front = "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())
    return f"---\n{front}\n---\nDo the work of {ticket_id}.\n"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(tmp_path / "remotes")


@pytest.fixture
def backlog(tmp_path: Path) -> Path:
    root = tmp_path / "backlog"
    for folder in ("todo", "doing", "done", "failed"):
        (root / folder).mkdir(parents=True)
    return root


@pytest.fixture
def write_ticket(backlog: Path) -> BacklogWriter:
    def write(ticket_id: str, folder: str = "todo", **fields: Any) -> Path:
        path = backlog / folder / f"{ticket_id}.md"
        path.write_text(ticket_text(ticket_id, **fields))
        return path

    return write


def write_beads(repo: Path, issues: list[dict[str, Any]]) -> Path:
    folder = repo / ".beads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "issues.jsonl"
    path.write_text("".join(json.dumps(issue) + "\n" for issue in issues))
    return path

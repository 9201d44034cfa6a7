"""Backlog.md-style folders: `todo/`, `doing/`, `done/`, `failed/` of Markdown tickets with YAML front matter.

Intake reads todo/ and doing/, and moves a started ticket's file to doing/. Write-back moves it to done/
(DONE) or failed/ (FAILED, CANCELLED) with the outcome appended as a quoted line; a BLOCKED ticket stays
where it is and gets the reason appended. Each step is a same-filesystem rename, so a retried write-back
finds the file where the first attempt left it.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from clients.sources.base import (
    FOLLOW_UP_LABEL,
    Fetched,
    FollowUp,
    SourceError,
    SourceSpec,
    local_path,
    outcome_line,
)
from clients.ticket_files import TicketError, load_ticket_file
from workflows.contracts import Ticket, TicketState, WriteBackResult, slugify

OPEN_DIRS = ("doing", "todo")
ALL_DIRS = ("todo", "doing", "done", "failed")
_DESTINATION = {
    TicketState.DONE: "done",
    TicketState.FAILED: "failed",
    TicketState.CANCELLED: "failed",
}


def backlog_root(location: str) -> Path:
    """The folder holding todo/ etc.; a project folder with a backlog/ inside works too."""
    path = local_path(location)
    if not any((path / d).is_dir() for d in ALL_DIRS) and (path / "backlog").is_dir():
        path = path / "backlog"
    if not path.is_dir():
        raise SourceError(f"backlog folder {location!r} does not exist")
    if not any((path / d).is_dir() for d in ALL_DIRS):
        raise SourceError(f"{path} has none of the folders {', '.join(ALL_DIRS)}; is it a backlog folder?")
    return path


class BacklogSource:
    def __init__(self, spec: SourceSpec) -> None:
        self.root = backlog_root(spec.location)
        self.spec = SourceSpec("backlog", str(self.root), spec.params)

    def _defaults(self) -> dict[str, Any]:
        fields = {"repo": self.spec.params.get("repo"), "base_branch": self.spec.params.get("base")}
        return {k: v for k, v in fields.items() if v}

    async def fetch(self) -> Fetched:
        return await asyncio.to_thread(self._fetch)

    def _fetch(self) -> Fetched:
        found = Fetched()
        for folder in OPEN_DIRS:
            for path in sorted((self.root / folder).glob("*.md")):
                try:
                    ticket = load_ticket_file(path, self._defaults())
                except TicketError as exc:
                    hint = " (name one in the file or with ?repo=NAME)" if "repo:" in str(exc) else ""
                    found.errors.append(f"{exc}{hint}")
                    continue
                found.tickets.append(ticket.model_copy(update={"source": self.spec.item_ref(path.name)}))
        return found

    async def known_ids(self) -> set[str]:
        return await asyncio.to_thread(self._ids_in, ALL_DIRS)

    async def done_ids(self) -> set[str]:
        return await asyncio.to_thread(self._ids_in, ("done",))

    def _ids_in(self, folders: tuple[str, ...]) -> set[str]:
        ids: set[str] = set()
        for folder in folders:
            for path in (self.root / folder).glob("*.md"):
                try:
                    ids.add(load_ticket_file(path, {"repo": "-", **self._defaults()}).id)
                except TicketError:
                    ids.add(slugify(path.stem, 60))
        return ids

    async def mark_started(self, ticket: Ticket) -> None:
        name = self._item(ticket)
        if (self.root / "todo" / name).is_file():
            await asyncio.to_thread(self._move, name, "doing", None, only_from=("todo",))

    async def write_back(
        self, ticket: Ticket, state: TicketState, pr_url: str | None, reason: str
    ) -> WriteBackResult:
        name = self._item(ticket)
        note = outcome_line(state, pr_url, reason)
        target = _DESTINATION.get(state)
        return await asyncio.to_thread(self._move, name, target, note, only_from=ALL_DIRS)

    async def add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str | None:
        return await asyncio.to_thread(self._add_follow_up, parent, follow_up)

    def _add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str:
        name = f"{follow_up.ticket_id}.md"
        if self._find(name, ALL_DIRS) is None:
            meta = {
                "id": follow_up.ticket_id,
                "title": follow_up.title,
                "priority": follow_up.priority,
                "labels": [FOLLOW_UP_LABEL],
                "repo": parent.repo,
                "base": parent.base_branch,
            }
            # JSON scalars are valid YAML, and json.dumps quotes whatever the finding's text holds.
            front = "\n".join(f"{key}: {json.dumps(value)}" for key, value in meta.items())
            (self.root / "todo").mkdir(exist_ok=True)
            temp = self.root / "todo" / f".{name}.tmp"
            temp.write_text(f"---\n{front}\n---\n{follow_up.body}\n", encoding="utf-8")
            os.replace(temp, self.root / "todo" / name)
        return follow_up.ticket_id

    def _item(self, ticket: Ticket) -> str:
        if not ticket.source:
            raise SourceError(f"ticket {ticket.id} has no source")
        name = ticket.source.rpartition("#")[2]
        if "/" in name or name in ("", ".", ".."):
            raise SourceError(f"ticket {ticket.id}: {name!r} is not a file name of this backlog")
        return name

    def _find(self, name: str, folders: tuple[str, ...]) -> Path | None:
        return next((self.root / d / name for d in folders if (self.root / d / name).is_file()), None)

    def _move(
        self, name: str, target: str | None, note: str | None, *, only_from: tuple[str, ...]
    ) -> WriteBackResult:
        current = self._find(name, only_from)
        if current is None:
            raise SourceError(f"{name} is in none of {', '.join(only_from)} under {self.root}")
        destination = current if target is None else self.root / target / name
        text = current.read_text(encoding="utf-8")
        if note and note not in text:
            text = text.rstrip("\n") + f"\n\n> {note}\n"
        changed = destination != current or text != current.read_text(encoding="utf-8")
        if changed:
            destination.parent.mkdir(exist_ok=True)
            temp = destination.with_name(f".{name}.tmp")
            temp.write_text(text, encoding="utf-8")
            os.replace(temp, destination)
            if destination != current:
                current.unlink()
        where = destination.relative_to(self.root)
        return WriteBackResult(changed=changed, action=f"{name} -> {where}", location=str(destination))

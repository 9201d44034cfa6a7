"""Real Backlog.md projects (the `backlog` CLI's layout): `backlog/config.yml` and one Markdown file per
task in `backlog/tasks/`, `<id> - <title>.md`, finished ones possibly moved to `backlog/completed/`.

A task's front matter has `id` (TASK-12), `title`, `status` (one of config.yml's `statuses`), `priority`
(high/medium/low), `labels` and `dependencies` (task ids); its body has a Description section and
Acceptance Criteria, both of which become the ticket's body. Intake takes the tasks whose status is any
but the last (the done status) unless `?status=To Do` names the ones to take, and marks a started task
with the in-progress status (the second of three or more). Write-back sets the status (DONE: the last;
FAILED and CANCELLED: back to the first, so a person sees it open again; BLOCKED: unchanged) and appends
the outcome to the task's Implementation Notes, once. It goes through the `backlog` CLI when one is on
PATH (so the CLI's own bookkeeping, e.g. updated_date, stays right), else edits the file the way the CLI
writes it. The ticket id is the task id; `source` names the task by id, as files are renamed when a
title changes and moved when a task is completed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clients.sources.base import (
    FOLLOW_UP_LABEL,
    Fetched,
    FollowUp,
    SourceError,
    SourceSpec,
    local_path,
    outcome_line,
)
from clients.ticket_files import TicketError, _split, explain
from workflows.contracts import Ticket, TicketState, WriteBackResult

CONFIG = "config.yml"
FINISHED_DIRS = ("completed", "archive/tasks")
_PRIORITY = {"high": 2, "medium": 3, "low": 4}
_SECTION = re.compile(
    r"<!-- SECTION:(?P<name>[A-Z_]+):BEGIN -->\n?(?P<text>.*?)\n?<!-- SECTION:(?P=name):END -->", re.S
)
_ACCEPTANCE = re.compile(r"<!-- AC:BEGIN -->\n?(?P<text>.*?)\n?<!-- AC:END -->", re.S)
_AC_ITEM = re.compile(r"^- \[(?P<done>[ xX])\] (?:#\d+ )?(?P<text>.+)$", re.M)
NOTES_HEADING = "## Implementation Notes"
CLI_TIMEOUT = 60.0


def project_root(location: str) -> Path | None:
    """The Backlog.md folder (the one holding config.yml and tasks/) at or below `location`, if any."""
    path = local_path(location)
    for candidate in (path, path / "backlog", path / ".backlog"):
        if (candidate / CONFIG).is_file() and (candidate / "tasks").is_dir():
            return candidate
    return None


def task_body(text: str) -> str:
    """The ticket body of a task file: its description, then its acceptance criteria as a checklist."""
    sections = {m.group("name"): m.group("text").strip() for m in _SECTION.finditer(text)}
    description = sections.get("DESCRIPTION")
    if description is None:  # hand-written tasks without the CLI's markers: the body as it is
        description = re.sub(r"(?m)^## Description\s*$", "", text).strip()
    parts = [description] if description else []
    criteria = _ACCEPTANCE.search(text)
    items = _AC_ITEM.findall(criteria.group("text")) if criteria else []
    if items:
        lines = [f"- [{'x' if done.strip() else ' '}] {item.strip()}" for done, item in items]
        parts.append("Acceptance criteria:\n" + "\n".join(lines))
    return "\n\n".join(parts).strip()


class BacklogProjectSource:
    """A Backlog.md project; see the module docstring."""

    def __init__(self, spec: SourceSpec, root: Path) -> None:
        self.root = root
        self.spec = SourceSpec("backlog", str(root), spec.params)
        config = self._config()
        statuses = config.get("statuses") or ["To Do", "In Progress", "Done"]
        if (
            not isinstance(statuses, list)
            or not all(isinstance(s, str) for s in statuses)
            or len(statuses) < 2
        ):
            raise SourceError(f"{root / CONFIG}: statuses must be a list of at least two names")
        self.statuses: list[str] = statuses
        wanted = spec.params.get("status")
        if wanted is not None and wanted not in statuses:
            raise SourceError(f"?status={wanted!r} is none of {root / CONFIG}'s statuses {statuses}")
        self.open_statuses = [wanted] if wanted else statuses[:-1]
        self.done_status = statuses[-1]
        self.started_status = statuses[1] if len(statuses) >= 3 else None
        self.prefix = str(config.get("task_prefix") or "task")

    def _config(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load((self.root / CONFIG).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SourceError(f"{self.root / CONFIG}: cannot read it ({exc})") from None
        if not isinstance(data, dict):
            raise SourceError(f"{self.root / CONFIG}: not a mapping")
        return data

    # ------------------------------------------------------------------------------------ reading

    def _files(self, *folders: str) -> list[Path]:
        return [p for folder in folders for p in sorted((self.root / folder).glob("*.md"))]

    def _read(self, path: Path) -> tuple[dict[str, Any], str]:
        try:
            return _split(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise TicketError(f"{path}: cannot read task file ({exc})") from exc

    def _ticket(self, path: Path, meta: dict[str, Any], body: str) -> Ticket:
        priority = meta.get("priority")
        fields: dict[str, Any] = {
            "id": str(meta.get("id", "")),
            "title": str(meta.get("title") or ""),
            "body": task_body(body) or str(meta.get("title") or ""),
            "labels": [str(label) for label in meta.get("labels") or []],
            "depends_on": [str(dep) for dep in meta.get("dependencies") or []],
            "priority": _PRIORITY.get(str(priority).lower(), 3) if priority else 3,
            "source": self.spec.item_ref(str(meta.get("id", ""))),
        }
        for key in ("repo", "base_branch", "test_command", "agent"):
            if meta.get(key):
                fields[key] = meta[key]
        fields.setdefault("repo", self.spec.params.get("repo"))
        if self.spec.params.get("base"):
            fields.setdefault("base_branch", self.spec.params["base"])
        if not fields["repo"]:
            raise TicketError(f"{path}: repo: no repository (name one with ?repo=NAME)")
        try:
            return Ticket.model_validate(fields)
        except ValidationError as exc:
            raise TicketError(f"{path}: {explain(exc)}") from exc

    async def fetch(self) -> Fetched:
        return await asyncio.to_thread(self._fetch)

    def _fetch(self) -> Fetched:
        found = Fetched()
        for path in self._files("tasks"):
            try:
                meta, body = self._read(path)
                if str(meta.get("status", "")) not in self.open_statuses:
                    continue
                found.tickets.append(self._ticket(path, meta, body))
            except TicketError as exc:
                found.errors.append(str(exc))
        return found

    def _ids(self, finished_only: bool) -> set[str]:
        ids = set()
        for path in self._files("tasks", *FINISHED_DIRS):
            try:
                meta, _ = self._read(path)
            except TicketError:
                continue
            in_tasks = path.parent == self.root / "tasks"
            if not finished_only or not in_tasks or meta.get("status") == self.done_status:
                ids.add(str(meta.get("id", "")))
        return ids - {""}

    async def known_ids(self) -> set[str]:
        return await asyncio.to_thread(self._ids, False)

    async def done_ids(self) -> set[str]:
        return await asyncio.to_thread(self._ids, True)

    def _path_of(self, task_id: str) -> Path:
        for path in self._files("tasks", *FINISHED_DIRS):
            try:
                meta, _ = self._read(path)
            except TicketError:
                continue
            if str(meta.get("id", "")).lower() == task_id.lower():
                return path
        raise SourceError(f"task {task_id} is not in {self.root}")

    # ------------------------------------------------------------------------------------ writing

    async def mark_started(self, ticket: Ticket) -> None:
        if self.started_status is not None:
            await asyncio.to_thread(self._update, self._task_id(ticket), self.started_status, None)

    async def write_back(
        self, ticket: Ticket, state: TicketState, pr_url: str | None, reason: str
    ) -> WriteBackResult:
        status = {
            TicketState.DONE: self.done_status,
            TicketState.FAILED: self.statuses[0],
            TicketState.CANCELLED: self.statuses[0],
        }.get(state)
        note = outcome_line(state, pr_url, reason)
        return await asyncio.to_thread(self._update, self._task_id(ticket), status, note)

    def _task_id(self, ticket: Ticket) -> str:
        if not ticket.source:
            raise SourceError(f"ticket {ticket.id} has no source")
        return ticket.source.rpartition("#")[2]

    def _update(self, task_id: str, status: str | None, note: str | None) -> WriteBackResult:
        path = self._path_of(task_id)
        meta, _ = self._read(path)
        text = path.read_text(encoding="utf-8")
        set_status = status is not None and meta.get("status") != status and path.parent.name == "tasks"
        add_note = note is not None and note not in text
        if set_status or add_note:
            cli = find_cli(self.spec.params.get("cli"))
            if cli is not None:
                args = ["task", "edit", task_id, "--plain"]
                args += ["--status", status] if set_status and status else []
                args += ["--append-notes", note] if add_note and note else []
                run_cli(cli, self.root.parent, args)
            else:
                self._edit_file(path, status if set_status else None, note if add_note else None)
        action = f"{task_id}: " + (f"status {status}" if set_status else "status unchanged")
        if add_note:
            action += f"; noted {note!r}"
        return WriteBackResult(
            changed=set_status or add_note, action=action, location=str(self._path_of(task_id))
        )

    def _edit_file(self, path: Path, status: str | None, note: str | None) -> None:
        """What `backlog task edit --status S --append-notes N` does to the file, without the CLI."""
        text = path.read_text(encoding="utf-8")
        front_end = text.index("\n---", 3)
        front, rest = text[:front_end], text[front_end:]
        if status is not None:
            quoted = yaml.safe_dump(status, default_style=None).strip().removesuffix("\n...")
            front = re.sub(r"(?m)^status:.*$", f"status: {quoted}", front, count=1)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        if re.search(r"(?m)^updated_date:", front):
            front = re.sub(r"(?m)^updated_date:.*$", f"updated_date: '{stamp}'", front, count=1)
        else:
            front = re.sub(r"(?m)^(created_date:.*)$", rf"\1\nupdated_date: '{stamp}'", front, count=1)
        if note is not None:
            block = re.search(
                r"<!-- SECTION:NOTES:BEGIN -->\n?(.*?)\n?<!-- SECTION:NOTES:END -->", rest, re.S
            )
            if block:
                existing = block.group(1).strip()
                merged = f"{existing}\n\n{note}" if existing else note
                rest = (
                    rest[: block.start()]
                    + f"<!-- SECTION:NOTES:BEGIN -->\n{merged}\n<!-- SECTION:NOTES:END -->"
                    + rest[block.end() :]
                )
            else:
                notes = f"<!-- SECTION:NOTES:BEGIN -->\n{note}\n<!-- SECTION:NOTES:END -->"
                rest = rest.rstrip("\n") + f"\n\n{NOTES_HEADING}\n\n{notes}\n"
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(front + rest, encoding="utf-8")
        os.replace(temp, path)

    async def add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str | None:
        return await asyncio.to_thread(self._add_follow_up, parent, follow_up)

    def _add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str:
        marker = f"<!-- ticketflow-follow-up: {follow_up.ticket_id} -->"
        for path in self._files("tasks", *FINISHED_DIRS):
            if marker in path.read_text(encoding="utf-8"):
                return str(self._read(path)[0].get("id", ""))
        priority = {1: "high", 2: "high", 3: "medium"}.get(follow_up.priority, "low")
        description = f"{follow_up.body}\n\n{marker}"
        cli = find_cli(self.spec.params.get("cli"))
        if cli is not None:
            args = [
                "task",
                "create",
                follow_up.title,
                "--description",
                description,
                "--labels",
                FOLLOW_UP_LABEL,
            ]
            args += ["--priority", priority, "--plain"]
            run_cli(cli, self.root.parent, args)
        else:
            self._write_task(follow_up.title, description, priority)
        for path in self._files("tasks"):
            if marker in path.read_text(encoding="utf-8"):
                return str(self._read(path)[0].get("id", ""))
        raise SourceError(f"the follow-up task for {follow_up.ticket_id} was not created in {self.root}")

    def _write_task(self, title: str, description: str, priority: str) -> None:
        numbers = [
            int(m.group(1))
            for task_id in self._ids(False)
            if (m := re.fullmatch(rf"{re.escape(self.prefix)}-(\d+)", task_id, re.I))
        ]
        task_id = f"{self.prefix.upper()}-{max(numbers, default=0) + 1}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        meta = {
            "id": task_id,
            "title": title,
            "status": self.statuses[0],
            "assignee": [],
            "created_date": stamp,
            "labels": [FOLLOW_UP_LABEL],
            "dependencies": [],
            "priority": priority,
        }
        front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
        section = f"<!-- SECTION:DESCRIPTION:BEGIN -->\n{description}\n<!-- SECTION:DESCRIPTION:END -->"
        body = f"## Description\n\n{section}\n"
        safe_title = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-")[:60]
        path = self.root / "tasks" / f"{task_id.lower()} - {safe_title}.md"
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(f"---\n{front}---\n\n{body}", encoding="utf-8")
        os.replace(temp, path)


def find_cli(configured: str | None) -> str | None:
    """The `backlog` CLI: the source's `?cli=` (a path or a name on PATH), else `backlog` on PATH;
    `?cli=none` never uses one."""
    if configured == "none":
        return None
    if configured:
        found = configured if Path(configured).is_file() else shutil.which(configured)
        if found is None:
            raise SourceError(f"?cli={configured!r}: no such program")
        return found
    return shutil.which("backlog")


def run_cli(cli: str, project: Path, args: list[str]) -> str:
    try:
        done = subprocess.run(
            [cli, *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"backlog {' '.join(args[:3])}: {exc}", retryable=True) from None
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:300]
        raise SourceError(f"backlog {' '.join(args[:3])} failed ({done.returncode}): {detail}")
    return done.stdout

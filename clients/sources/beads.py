"""beads (`bd`) issue trackers: `.beads/*.jsonl`, one issue per line, read directly.

Open and in-progress issues become tickets; `blocks` dependencies become depends_on; beads priority 0-4
maps to ticket priority 1-5. Write-back uses the `bd` CLI when it is on PATH (so its database stays in
step) and otherwise rewrites the one JSONL line itself, under a lock and through an atomic rename, with
every other line and field left byte-for-byte as it was.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clients.sources.base import (
    FOLLOW_UP_LABEL,
    Fetched,
    FollowUp,
    SourceError,
    SourceSpec,
    local_path,
    outcome_line,
    ticket_id_from,
)
from clients.ticket_files import explain
from workflows.contracts import Ticket, TicketState, WriteBackResult

OPEN_STATUSES = ("open", "in_progress")
BD_TIMEOUT = 60.0


def beads_dir(location: str) -> Path:
    path = local_path(location)
    folder = path if path.name == ".beads" else path / ".beads"
    if not folder.is_dir():
        raise SourceError(f"{path} has no .beads folder; is it a beads repository?")
    return folder


def _read_issues(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    issues: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{number}: not a JSON line ({exc.msg})") from exc
            if isinstance(record, dict) and {"id", "title", "status"} <= record.keys():
                issues.append((path, record))
    return issues


class BeadsSource:
    def __init__(self, spec: SourceSpec) -> None:
        self.folder = beads_dir(spec.location)
        self.spec = SourceSpec("beads", str(self.folder.parent), spec.params)

    async def fetch(self) -> Fetched:
        return await asyncio.to_thread(self._fetch)

    def _fetch(self) -> Fetched:
        found = Fetched()
        for _, issue in _read_issues(self.folder):
            if issue.get("status") not in OPEN_STATUSES or issue.get("issue_type") == "epic":
                continue
            try:
                found.tickets.append(self._ticket(issue))
            except ValidationError as exc:
                found.errors.append(f"bead {issue['id']}: {explain(exc)}")
            except SourceError as exc:
                found.errors.append(f"bead {issue['id']}: {exc}")
        return found

    def _ticket(self, issue: dict[str, Any]) -> Ticket:
        for key in ("labels", "dependencies"):
            if not isinstance(issue.get(key) or [], list):
                raise SourceError(f"{key} must be a list, not {type(issue[key]).__name__}")
        deps = [
            ticket_id_from(str(d.get("depends_on_id", "")))
            for d in issue.get("dependencies") or []
            if isinstance(d, dict) and d.get("type", "blocks") == "blocks" and d.get("depends_on_id")
        ]
        priority = issue.get("priority", 2)
        body = "\n\n".join(
            str(issue[k]) for k in ("description", "design", "acceptance_criteria") if issue.get(k)
        )
        return Ticket.model_validate(
            {
                "id": ticket_id_from(str(issue["id"])),
                "title": str(issue["title"]),
                "body": body or str(issue["title"]),
                "repo": self.spec.params.get("repo") or str(self.folder.parent),
                "base_branch": self.spec.params.get("base") or "main",
                "labels": [str(label) for label in issue.get("labels") or []],
                "priority": min(5, max(1, int(priority) + 1)) if isinstance(priority, int) else 3,
                "depends_on": [d for d in deps if d != ticket_id_from(str(issue["id"]))],
                "source": self.spec.item_ref(str(issue["id"])),
            }
        )

    async def known_ids(self) -> set[str]:
        issues = await asyncio.to_thread(_read_issues, self.folder)
        return {ticket_id_from(str(issue["id"])) for _, issue in issues}

    async def done_ids(self) -> set[str]:
        issues = await asyncio.to_thread(_read_issues, self.folder)
        return {ticket_id_from(str(issue["id"])) for _, issue in issues if issue.get("status") == "closed"}

    async def mark_started(self, ticket: Ticket) -> None:
        bead = _bead_id(ticket)
        await self._apply(bead, {"status": "in_progress"}, None, only_if=("open",))

    async def write_back(
        self, ticket: Ticket, state: TicketState, pr_url: str | None, reason: str
    ) -> WriteBackResult:
        bead = _bead_id(ticket)
        note = outcome_line(state, pr_url, reason)
        # A failed bead is parked as blocked, so `bd ready` does not hand it to the next agent either.
        status = {TicketState.DONE: "closed", TicketState.CANCELLED: "open"}.get(state, "blocked")
        return await self._apply(bead, {"status": status}, note, only_if=None)

    async def add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str | None:
        """A new open bead, `discovered-from` the parent: through `bd create` when bd is on PATH, else
        appended to the JSONL. Its external_ref names the follow-up, so asking twice creates one bead."""
        parent_bead = _bead_id(parent)
        marker = f"ticketflow:{follow_up.ticket_id}"
        existing = await asyncio.to_thread(_with_external_ref, self.folder, marker)
        if existing:
            return existing
        if shutil.which("bd"):
            argv = ["bd", "create", follow_up.title, "--description", follow_up.body, "--type", "task"]
            argv += ["--priority", str(_beads_priority(follow_up.priority)), "--labels", FOLLOW_UP_LABEL]
            argv += ["--deps", f"discovered-from:{parent_bead}", "--external-ref", marker, "--json"]
            output = await _run_bd(argv, self.folder.parent)
            try:
                created = json.loads(output)
            except ValueError:
                raise SourceError(f"`bd create --json` printed no JSON: {output[:200]!r}") from None
            return str(created.get("id") or "") or None if isinstance(created, dict) else None
        return await asyncio.to_thread(_append_bead, self.folder, parent_bead, follow_up, marker)

    async def _apply(
        self, bead: str, fields: dict[str, str], note: str | None, *, only_if: tuple[str, ...] | None
    ) -> WriteBackResult:
        if shutil.which("bd"):
            return await self._with_bd(bead, fields["status"], note, only_if)
        return await asyncio.to_thread(self._rewrite, bead, fields, note, only_if)

    async def _with_bd(
        self, bead: str, status: str, note: str | None, only_if: tuple[str, ...] | None
    ) -> WriteBackResult:
        current = next((i for _, i in _read_issues(self.folder) if i["id"] == bead), None)
        if current is None:
            raise SourceError(f"bead {bead} is not in {self.folder}")
        if (only_if and current["status"] not in only_if) or (
            current["status"] == status and (note is None or note in str(current.get("notes", "")))
        ):
            return WriteBackResult(changed=False, action=f"bead {bead} already {current['status']}")
        if status == "closed":
            argv = ["bd", "close", bead, "--reason", note or "done by ticketflow"]
        else:
            argv = ["bd", "update", bead, "--status", status]
            argv += ["--append-notes", note] if note else []
        await _run_bd(argv, self.folder.parent)
        return WriteBackResult(changed=True, action=f"bead {bead} -> {status} (bd)")

    def _rewrite(
        self, bead: str, fields: dict[str, str], note: str | None, only_if: tuple[str, ...] | None
    ) -> WriteBackResult:
        for path in sorted(self.folder.glob("*.jsonl")):
            with open(path.with_name(path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                result = _rewrite_line(path, bead, fields, note, only_if)
            if result is not None:
                return result
        raise SourceError(f"bead {bead} is not in {self.folder}")


def _rewrite_line(
    path: Path, bead: str, fields: dict[str, str], note: str | None, only_if: tuple[str, ...] | None
) -> WriteBackResult | None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("id") != bead:
            continue
        if only_if and record.get("status") not in only_if:
            return WriteBackResult(changed=False, action=f"bead {bead} already {record.get('status')}")
        updated = _updated(record, fields, note)
        if updated == record:
            return WriteBackResult(changed=False, action=f"bead {bead} already {record.get('status')}")
        lines[index] = json.dumps(updated, ensure_ascii=False, separators=(",", ":")) + "\n"
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text("".join(lines), encoding="utf-8")
        os.replace(temp, path)
        return WriteBackResult(changed=True, action=f"bead {bead} -> {updated['status']}", location=str(path))
    return None


def _updated(record: dict[str, Any], fields: dict[str, str], note: str | None) -> dict[str, Any]:
    notes = str(record.get("notes") or "")
    changes: dict[str, Any] = {k: v for k, v in fields.items() if record.get(k) != v}
    if note and note not in notes:
        changes["notes"] = f"{notes}\n{note}".strip("\n")
    if not changes:
        return record
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if changes.get("status") == "closed":
        changes.update(closed_at=now, close_reason=note or "done by ticketflow")
    return {**record, **changes, "updated_at": now}


def _bead_id(ticket: Ticket) -> str:
    if not ticket.source:
        raise SourceError(f"ticket {ticket.id} has no source")
    return ticket.source.rpartition("#")[2]


def _beads_priority(ticket_priority: int) -> int:
    return min(4, max(0, ticket_priority - 1))  # the inverse of fetch's 0-4 -> 1-5


def _with_external_ref(folder: Path, marker: str) -> str | None:
    return next((str(i["id"]) for _, i in _read_issues(folder) if i.get("external_ref") == marker), None)


def _append_bead(folder: Path, parent: str, follow_up: FollowUp, marker: str) -> str:
    """Append the follow-up as bd itself would export it; bd imports the newer JSONL on its next run."""
    path = next(iter(sorted(folder.glob("*.jsonl"))), folder / "issues.jsonl")
    prefix = parent.rpartition("-")[0] or "bd"
    bead = f"{prefix}-{hashlib.sha256(marker.encode()).hexdigest()[:6]}"  # stable: a retry finds it
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {
        "id": bead,
        "title": follow_up.title,
        "description": follow_up.body,
        "status": "open",
        "priority": _beads_priority(follow_up.priority),
        "issue_type": "task",
        "labels": [FOLLOW_UP_LABEL],
        "external_ref": marker,
        "created_at": now,
        "updated_at": now,
        "dependencies": [
            {"issue_id": bead, "depends_on_id": parent, "type": "discovered-from", "created_at": now}
        ],
    }
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _with_external_ref(folder, marker) is None:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line, encoding="utf-8")
            os.replace(temp, path)
    return bead


async def _run_bd(argv: list[str], cwd: Path) -> str:
    """Run bd; its standard output (for --json), or a retryable SourceError."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BD_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SourceError(
            f"`{' '.join(argv[:3])}` did not finish in {BD_TIMEOUT:.0f}s", retryable=True
        ) from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()
        raise SourceError(
            f"`{' '.join(argv[:3])}` failed: {tail[-1] if tail else proc.returncode}", retryable=True
        )
    return out.decode(errors="replace")

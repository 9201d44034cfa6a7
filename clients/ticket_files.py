"""Tickets as Markdown files with YAML front matter (Backlog.md style)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workflows.contracts import Ticket, slugify

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL)
_PRIORITY_WORDS = {"critical": 1, "urgent": 1, "high": 2, "medium": 3, "normal": 3, "low": 4, "lowest": 5}
# Backlog.md and our own spellings of the same fields.
_ALIASES = {
    "base": "base_branch",
    "dependencies": "depends_on",
    "dependsOn": "depends_on",
    "testCommand": "test_command",
    "maxIterations": "max_iterations",
    "requireApproval": "require_approval",
}
_IGNORED = {
    "status",
    "assignee",
    "created_date",
    "updated_date",
    "createdDate",
    "updatedDate",
    "parent",
    "ordinal",
}


class TicketError(Exception):
    """A ticket that cannot be accepted; the message is one line naming the file and the reason."""


def explain(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "ticket"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _priority(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in _PRIORITY_WORDS:
        return _PRIORITY_WORDS[value.strip().lower()]
    return value


def _models(meta: dict[str, Any]) -> dict[str, Any]:
    models = meta.pop("models", None) or {}
    preferred = meta.pop("modelPreference", None) or meta.pop("suggestedModels", None)
    if preferred:
        models = dict(models) if isinstance(models, dict) else {}
        models.setdefault("code", [preferred] if isinstance(preferred, str) else list(preferred))
    return models if isinstance(models, dict) else {"code": models}


def _split(text: str, origin: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        raise TicketError(f"{origin}: front matter is not valid YAML{where}") from exc
    if not isinstance(meta, dict):
        raise TicketError(f"{origin}: front matter must be a mapping of fields")
    return meta, match.group(2)


def _title_from_body(body: str) -> tuple[str | None, str]:
    lines = body.lstrip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        return lines[0][2:].strip(), "\n".join(lines[1:]).strip("\n")
    return None, body


def parse_ticket(text: str, origin: str, defaults: dict[str, Any] | None = None) -> Ticket:
    meta, body = _split(text, origin)
    meta = {_ALIASES.get(str(k), str(k)): v for k, v in meta.items() if str(k) not in _IGNORED}
    heading, body = _title_from_body(body) if "title" not in meta else (None, body)
    fields: dict[str, Any] = {**(defaults or {}), **meta}
    fields.setdefault("title", heading or "")
    fields.setdefault("id", slugify(Path(origin).stem, 60) or "")
    fields["id"] = str(fields["id"])
    fields["body"] = body.strip() or str(fields.pop("description", "") or "")
    fields.pop("description", None)
    if "priority" in fields:
        fields["priority"] = _priority(fields["priority"])
    fields["models"] = _models(fields)
    for key in ("labels", "depends_on"):
        if isinstance(fields.get(key), str):
            fields[key] = [part.strip() for part in fields[key].split(",")]
    try:
        return Ticket.model_validate(fields)
    except ValidationError as exc:
        raise TicketError(f"{origin}: {explain(exc)}") from exc


def load_ticket_file(path: Path, defaults: dict[str, Any] | None = None) -> Ticket:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TicketError(f"{path}: cannot read ticket file ({exc})") from exc
    return parse_ticket(text, str(path), defaults)

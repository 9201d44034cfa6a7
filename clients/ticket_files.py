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
        where = ".".join(
            str(p) if isinstance(p, int) or str(p).isprintable() else repr(p) for p in item["loc"]
        )
        where = where or "ticket"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _priority(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in _PRIORITY_WORDS:
        return _PRIORITY_WORDS[value.strip().lower()]
    return value


def _models(meta: dict[str, Any]) -> Any:
    """Backlog.md's modelPreference/suggestedModels become the code stage's chain."""
    models = meta.pop("models", None) or {}
    preference, suggested = meta.pop("modelPreference", None), meta.pop("suggestedModels", None)
    preferred = preference or suggested
    if preferred and isinstance(models, dict):
        models = dict(models)
        models.setdefault("code", [preferred] if isinstance(preferred, str) else preferred)
    if isinstance(models, list):
        return {"code": models}
    return models  # anything malformed is left for the model's validation to explain


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
    if fields.get("id") is None:
        fields["id"] = slugify(Path(origin).stem, 60)
    if not isinstance(fields["id"], str | int) or isinstance(fields["id"], bool):
        raise TicketError(f"{origin}: id: must be a string or a number")
    fields["id"] = str(fields["id"])
    description = fields.pop("description", None) or ""
    if not isinstance(description, str):
        raise TicketError(f"{origin}: description: must be text")
    fields["body"] = body.strip() or description
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

"""Logging for the worker and CLI: JSON lines for machines, readable text on a terminal.

Temporal's `workflow.logger` and `activity.logger` attach a context dict to each record
(`temporal_workflow` / `temporal_activity`: workflow id, run id, activity type, attempt, ...). The JSON
formatter flattens it into ticket_id, workflow_id, run_id, stage and attempt; `model`, `agent` and
`trace_id` come from a record's `extra` when the caller gives them, else the current span's trace id.
Messages pass through activities.redact, so a configured secret never reaches a log line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace

TICKET_PREFIX = "ticket-"
EXTRA_FIELDS = ("ticket_id", "stage", "model", "agent", "attempt", "trace_id")


def ticket_context(record: logging.LogRecord) -> dict[str, Any]:
    """The ticket fields of one record, from Temporal's context dicts and the record's extras."""
    fields: dict[str, Any] = {}
    wf: Mapping[str, Any] = getattr(record, "temporal_workflow", None) or {}
    act: Mapping[str, Any] = getattr(record, "temporal_activity", None) or {}
    workflow_id = act.get("workflow_id") or wf.get("workflow_id")
    if workflow_id:
        fields["workflow_id"] = workflow_id
        if str(workflow_id).startswith(TICKET_PREFIX):
            fields["ticket_id"] = str(workflow_id)[len(TICKET_PREFIX) :]
    run_id = act.get("workflow_run_id") or wf.get("run_id")
    if run_id:
        fields["run_id"] = run_id
    if act:
        fields["stage"] = act.get("activity_type")
        fields["attempt"] = act.get("attempt")
    elif wf.get("attempt") is not None:
        fields["attempt"] = wf.get("attempt")
    for name in EXTRA_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    if "trace_id" not in fields:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = format(span.trace_id, "032x")
    return {k: v for k, v in fields.items() if v is not None}


def message_of(record: logging.LogRecord) -> str:
    """The message without the context dict Temporal's loggers append to it (it becomes fields)."""
    message = record.getMessage()
    if getattr(record, "temporal_workflow", None) or getattr(record, "temporal_activity", None):
        message = message.split(" ({'")[0]
    return message


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: Callable[[str], str] = lambda text: text) -> None:
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.scrub(message_of(record)),
            **ticket_context(record),
        }
        if record.exc_info:
            line["exc"] = self.scrub(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`12:00:01 WARNING [PAY-12 run_agent #2] message` for people at a terminal."""

    def __init__(self, scrub: Callable[[str], str] = lambda text: text) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        ctx = ticket_context(record)
        parts = [ctx.get("ticket_id") or ctx.get("workflow_id"), ctx.get("stage")]
        if ctx.get("attempt") and ctx.get("stage"):
            parts.append(f"#{ctx['attempt']}")
        if ctx.get("model"):
            parts.append(str(ctx["model"]))
        label = " ".join(str(p) for p in parts if p)
        stamp = self.formatTime(record, self.datefmt)
        line = f"{stamp} {record.levelname:<7} " + (f"[{label}] " if label else "") + message_of(record)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.scrub(line)


def setup_logging(
    fmt: Literal["auto", "json", "text"] = "auto",
    level: str = "INFO",
    stream: TextIO | None = None,
    secrets: list[str] | None = None,
) -> logging.Handler:
    """Configure the root logger once: JSON unless `fmt` says text or (auto) the stream is a TTY."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    scrub = _scrubber(secrets or [])
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(scrub) if use_json else TextFormatter(scrub))
    handler.addFilter(_redacting_filter(secrets or []))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ticketflow", False)]:
        root.removeHandler(old)
    handler._ticketflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def _redacting_filter(secrets: list[str]) -> logging.Filter:
    from activities.redact import RedactingFilter

    return RedactingFilter(secrets)


def _scrubber(secrets: list[str]) -> Callable[[str], str]:
    from activities.redact import redact

    return lambda text: redact(text, secrets)

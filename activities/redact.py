"""Masking secrets in text that leaves the worker: logs, status lines, PR bodies, payloads.

`redact` masks the configured secret values (Settings.secret_values) and everything the secrets scanner
(activities/secrets_scan.py: every detect-secrets plugin plus ticketflow's own detectors) finds: token
shapes, keyword assignments, high-entropy values, PEM blocks, userinfo in URLs. `RedactingFilter` does
the same to every record a log handler emits, exception text included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from activities.secrets_scan import MASK, redact_text

__all__ = ["MASK", "LineRedactor", "RedactingFilter", "redact", "redact_lines"]

_PEM_BEGIN = re.compile(r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return redact_text(text)


class LineRedactor:
    """`redact` for a stream of lines seen one at a time (agent output): a private key printed over
    several lines is masked whole, from its BEGIN line to its END line, not only the lines that look
    like key material on their own."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = list(secrets)
        self.in_key = False

    def __call__(self, line: str) -> str:
        if self.in_key:
            if _PEM_END.search(line):
                self.in_key = False
                return MASK + redact(_PEM_END.split(line, 1)[1], self.secrets)
            return MASK
        begin = _PEM_BEGIN.search(line)
        if begin and not _PEM_END.search(line, begin.end()):
            self.in_key = True
        return redact(line, self.secrets)


def redact_lines(lines: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    redactor = LineRedactor(secrets)
    return [redactor(line) for line in lines]


class RedactingFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it: message, exception and stack text.

    The record is rewritten in place (message formatted, args dropped), so every handler after this one
    sees the masked text too; it never drops a record.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, masked
            message = f"{record.msg} {record.args}"
        masked = redact(message, self.secrets)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True

"""Masking secrets in text that leaves the worker: logs, status lines, PR bodies, payloads."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# Well-known token shapes; the configured secret values are masked too (see Settings.secret_values).
_TOKEN_PATTERNS = [
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"glpat-[A-Za-z0-9_-]{20,}"),
    re.compile(r"sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, MASK)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def redact_lines(lines: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    secret_list = list(secrets)
    return [redact(line, secret_list) for line in lines]

"""What every ticket source (Backlog.md folder, beads repo, GitHub issues) offers intake and write-back.

A source spec is one string: `KIND:LOCATION[?key=value&...]` (docs/intake.md). Each ticket a source
yields carries `source = "<spec>#<item>"`, which is all write-back needs to find the item again, so the
write_back activity reads no intake state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from workflows.contracts import MAX_TITLE_CHARS, Finding, Ticket, TicketState, WriteBackResult, slugify

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ID = 63
FOLLOW_UP_LABEL = "follow-up"
FOLLOW_UP_SEVERITIES = ("high", "medium")
MAX_FOLLOW_UPS = 5


class SourceError(Exception):
    """A source cannot be read or written; `retryable` tells write-back whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    location: str
    params: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        # "/" and ":" stay readable; "#", "?" and "&" are escaped, so SPEC#ITEM always splits cleanly.
        query = f"?{urlencode(sorted(self.params.items()), safe='/:')}" if self.params else ""
        return f"{self.kind}:{self.location}{query}"

    def item_ref(self, item: str) -> str:
        """The ticket.source value of one item of this source."""
        return f"{self.render()}#{item}"


def check_spec_text(text: str) -> None:
    """Refuse what no path or URL holds: control characters (NUL included) and unencodable text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"source {text!r} is not valid text (a lone surrogate?)") from None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise SourceError(f"source {text!r} contains control characters")


def local_path(location: str) -> Path:
    """A source's folder: `~` expanded (an unknown `~user` is a clear error), made absolute."""
    try:
        return Path(location).expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as exc:
        raise SourceError(f"cannot use {location!r} as a folder: {exc}") from None


def parse_spec(text: str) -> SourceSpec:
    check_spec_text(text)
    kind, sep, rest = text.strip().partition(":")
    if not sep or not kind.isalpha() or not rest:
        raise SourceError(f"source {text!r} is not KIND:LOCATION (e.g. backlog:./backlog, github:acme/app)")
    location, _, query = rest.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise SourceError(f"source {text!r}: cannot read its ?key=value options") from exc
    return SourceSpec(kind.lower(), location, params)


def split_item_ref(ref: str) -> tuple[SourceSpec, str]:
    """`backlog:/x/backlog#todo/task-3.md` -> (spec, "todo/task-3.md")."""
    spec_text, sep, item = ref.rpartition("#")
    if not sep or not item:
        raise SourceError(f"ticket source {ref!r} names no item (expected SPEC#ITEM)")
    return parse_spec(spec_text), item


def ticket_id_from(*parts: str) -> str:
    """A valid ticket id from a source's own ids: unsafe characters become '-', the tail is kept."""
    raw = "-".join(_UNSAFE_ID_CHARS.sub("-", p).strip("-_") for p in parts if p)
    raw = raw.strip("-_") or "ticket"
    return raw[-MAX_ID:].lstrip("-_") or "ticket"


@dataclass(frozen=True)
class FollowUp:
    """A new ticket for a non-blocking review finding; `ticket_id` is stable, so re-creating is a no-op."""

    ticket_id: str
    title: str
    body: str
    priority: int


def follow_ups_for(parent: Ticket, findings: list[Finding], pr_url: str | None) -> list[FollowUp]:
    """Medium and high findings that did not block, at most MAX_FOLLOW_UPS; none for a follow-up itself
    (so review findings cannot breed tickets without end)."""
    if FOLLOW_UP_LABEL in parent.labels:
        return []
    chosen = [f for f in findings if f.severity in FOLLOW_UP_SEVERITIES][:MAX_FOLLOW_UPS]
    made = []
    for number, finding in enumerate(chosen, 1):
        message = " ".join(finding.message.split())
        title = f"Follow-up to {parent.id}: {message}"[:MAX_TITLE_CHARS].strip()
        if not slugify(title):
            title = f"Follow-up to {parent.id}"
        where = (
            f" in `{finding.file}`" + (f" line {finding.line}" if finding.line else "")
            if finding.file
            else ""
        )
        body = (
            f"The review of ticket {parent.id}"
            + (f" ({pr_url})" if pr_url else "")
            + f" found ({finding.severity}, rule `{finding.rule}`){where}:\n\n{finding.message}\n\n"
            "It did not block that ticket; address it here."
        )
        made.append(
            FollowUp(ticket_id_from(parent.id, f"fu{number}"), title, body, min(5, parent.priority + 1))
        )
    return made


@dataclass
class Fetched:
    tickets: list[Ticket] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class TicketSource(Protocol):
    spec: SourceSpec

    async def fetch(self) -> Fetched:
        """The open tickets of this source (ticket.source set), and one clear error per bad item."""
        ...

    async def known_ids(self) -> set[str]:
        """Ids of items the source knows, finished ones included (dependencies may name them)."""
        ...

    async def done_ids(self) -> set[str]:
        """Ids of items the source itself records as done (a done/ file, a closed bead)."""
        ...

    async def mark_started(self, ticket: Ticket) -> None:
        """Note in the source that the ticket now runs (e.g. move todo/ -> doing/); idempotent."""
        ...

    async def write_back(
        self, ticket: Ticket, state: TicketState, pr_url: str | None, reason: str
    ) -> WriteBackResult:
        """Report the outcome in the source; doing it twice changes nothing the second time."""
        ...

    async def add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str | None:
        """Create the follow-up item unless it exists; its reference, or None if the source has none."""
        ...


def outcome_line(state: TicketState, pr_url: str | None, reason: str) -> str:
    """One human line for notes and comments."""
    if state is TicketState.DONE:
        return f"ticketflow: DONE, pull request {pr_url}" if pr_url else "ticketflow: DONE"
    return f"ticketflow: {state.value}" + (f": {reason}" if reason else "")

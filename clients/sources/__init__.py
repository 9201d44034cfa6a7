"""Ticket sources by kind: adding one is a module implementing TicketSource plus one line in SOURCES.

`open_source` takes what a user types (`./backlog`, `beads:~/app`, `github:acme/app?label=agent`); a bare
path is a Backlog.md folder, or a beads repository when it holds a .beads folder.
"""

from __future__ import annotations

from collections.abc import Callable

from activities.settings import Settings
from clients.sources.backlog_md import BacklogSource
from clients.sources.backlog_project import BacklogProjectSource, project_root
from clients.sources.base import (
    Fetched,
    SourceError,
    SourceSpec,
    TicketSource,
    check_spec_text,
    local_path,
    parse_spec,
    split_item_ref,
    ticket_id_from,
)
from clients.sources.beads import BeadsSource
from clients.sources.gitea_issues import GiteaIssuesSource
from clients.sources.github_issues import GitHubIssuesSource
from clients.sources.gitlab_issues import GitLabIssuesSource

__all__ = [
    "SOURCES",
    "Fetched",
    "SourceError",
    "SourceSpec",
    "TicketSource",
    "open_source",
    "source_for_ticket",
    "ticket_id_from",
]

SOURCES: dict[str, Callable[[SourceSpec, Settings], TicketSource]] = {
    "backlog": lambda spec, _settings: _backlog(spec),
    "beads": lambda spec, _settings: BeadsSource(spec),
    "github": lambda spec, settings: GitHubIssuesSource(spec, settings.github_token),
    "gitlab": lambda spec, settings: GitLabIssuesSource(spec, settings.gitlab_token),
    "gitea": lambda spec, settings: GiteaIssuesSource(spec, settings.gitea_token),
}


def _backlog(spec: SourceSpec) -> TicketSource:
    """A real Backlog.md project (config.yml and tasks/) or, failing that, the todo/doing/done/failed
    folder layout (docs/intake.md)."""
    root = project_root(spec.location)
    return BacklogProjectSource(spec, root) if root is not None else BacklogSource(spec)


def _spec_of(text: str) -> SourceSpec:
    check_spec_text(text)
    kind = text.partition(":")[0]
    if kind.isalpha() and len(kind) > 1 and ":" in text:
        return parse_spec(text)
    # A bare path: decide by what is in it.
    path, _, query = text.partition("?")
    kind = "beads" if (local_path(path) / ".beads").is_dir() else "backlog"
    return parse_spec(f"{kind}:{path}" + (f"?{query}" if query else ""))


def open_source(text: str, settings: Settings) -> TicketSource:
    spec = _spec_of(text)
    factory = SOURCES.get(spec.kind)
    if factory is None:
        raise SourceError(f"unknown source kind {spec.kind!r} (known: {', '.join(sorted(SOURCES))})")
    return factory(spec, settings)


def source_for_ticket(ref: str, settings: Settings) -> TicketSource:
    """The source a ticket came from, rebuilt from its `source` field (SPEC#ITEM)."""
    spec, _ = split_item_ref(ref)
    return open_source(spec.render(), settings)

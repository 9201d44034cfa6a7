"""GitLab issues carrying a label, over `/api/v4` (`gitlab:group/project`, subgroups too).

The same intake and write-back as GitHub issues, in GitLab's terms: issues are `iid`s of a project
addressed by its URL-encoded path, the text is `description`, labels are names (set with `add_labels` /
`remove_labels` on the issue), comments are notes, the token goes in `PRIVATE-TOKEN`, and the API root
is `https://gitlab.com/api/v4` unless `api=` names a self-hosted one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr, ValidationError

from clients.sources.base import Fetched, FollowUp, SourceError, SourceSpec, outcome_line
from clients.sources.github_issues import MAX_PAGES, TIMEOUT, GitHubIssuesSource, _request
from clients.ticket_files import explain
from workflows.contracts import Ticket, TicketState, WriteBackResult

API_URL = "https://gitlab.com/api/v4"
_PROJECT = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")


def as_issue(item: dict[str, Any]) -> dict[str, Any]:
    """A GitLab issue in the shape ticket_from_issue reads (number, title, body, labels by name)."""
    labels = [label if isinstance(label, str) else label.get("title") for label in item.get("labels") or []]
    return {
        "number": item.get("iid"),
        "title": item.get("title"),
        "body": item.get("description"),
        "labels": [{"name": str(name)} for name in labels if name],
    }


class GitLabIssuesSource(GitHubIssuesSource):
    host = "GitLab"

    def __init__(self, spec: SourceSpec, token: SecretStr | None) -> None:
        if not _PROJECT.fullmatch(spec.location):
            raise SourceError(f"gitlab source {spec.location!r} is not GROUP/PROJECT")
        self.owner_repo = spec.location
        self.label = spec.params.get("label", "ticketflow")
        self.api_url = spec.params.get("api", API_URL).rstrip("/")
        root = urlsplit(self.api_url)
        self.web_url = f"{root.scheme}://{root.netloc}{root.path.removesuffix('/api/v4')}".rstrip("/")
        self.spec = spec
        self._token = token
        self._project = f"/projects/{quote(spec.location, safe='')}"
        self.transport = None

    async def fetch(self) -> Fetched:
        found = Fetched()
        params: dict[str, str] | None = {"labels": self.label, "state": "opened", "per_page": "100"}
        url: str | None = f"{self._project}/issues"
        async with self._client() as client:
            for _ in range(MAX_PAGES):
                if url is None:
                    break
                resp = await _request(client, "GET", url, params=params, host=self.host)
                for item in resp.json():
                    if not isinstance(item, dict):
                        continue
                    try:
                        found.tickets.append(self.ticket_from_issue(as_issue(item)))
                    except ValidationError as exc:
                        found.errors.append(f"{self.owner_repo}#{item.get('iid')}: {explain(exc)}")
                url, params = resp.links.get("next", {}).get("url"), None
        return found

    async def write_back(
        self, ticket: Ticket, state: TicketState, pr_url: str | None, reason: str
    ) -> WriteBackResult:
        number = ticket.source.rpartition("#")[2] if ticket.source else ""
        if not number.isdigit():
            raise SourceError(f"ticket {ticket.id}: {ticket.source!r} names no issue number")
        line = outcome_line(state, pr_url, reason)
        base = f"{self._project}/issues/{number}"
        async with self._client() as client:
            params = {"per_page": "100", "sort": "desc"}
            notes = (await _request(client, "GET", f"{base}/notes", params=params, host=self.host)).json()
            noted = any(line in str(n.get("body", "")) for n in notes if isinstance(n, dict))
            if not noted:
                await _request(client, "POST", f"{base}/notes", json={"body": line}, host=self.host)
            outcome = {TicketState.DONE: "done", TicketState.BLOCKED: "blocked"}.get(state, "failed")
            stale = [self.label] if state is not TicketState.BLOCKED else []
            stale += [f"{self.label}:blocked"] if outcome != "blocked" else []
            change = {"add_labels": f"{self.label}:{outcome}", "remove_labels": ",".join(stale)}
            await _request(client, "PUT", base, json=change, host=self.host)
        return WriteBackResult(changed=not noted, action=f"{self.owner_repo}#{number}: {line}")

    async def add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str | None:
        marker = f"<!-- ticketflow-follow-up: {follow_up.ticket_id} -->"
        label = f"{self.label}:follow-up"
        path = f"{self._project}/issues"
        async with self._client() as client:
            params = {"labels": label, "state": "all", "per_page": "100"}
            existing = (await _request(client, "GET", path, params=params, host=self.host)).json()
            found = next((i for i in existing if marker in str(i.get("description") or "")), None)
            if found is None:
                payload = {
                    "title": follow_up.title,
                    "description": f"{follow_up.body}\n\n{marker}",
                    "labels": label,
                }
                found = (await _request(client, "POST", path, json=payload, host=self.host)).json()
        return f"{self.owner_repo}#{found['iid']}"

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["PRIVATE-TOKEN"] = self._token.get_secret_value()
        return httpx.AsyncClient(
            base_url=self.api_url, headers=headers, timeout=TIMEOUT, transport=self.transport
        )

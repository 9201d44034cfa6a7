"""GitHub issues carrying a label, over the REST API (Link-header pagination, rate-limit headers obeyed).

Write-back comments the outcome (with the PR link) once and relabels the issue: the intake label comes
off a finished issue, and `<label>:done`, `<label>:failed` or `<label>:blocked` goes on.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from activities.githosts.base import error_for_status, rate_limit_wait
from clients.sources.base import (
    Fetched,
    FollowUp,
    SourceError,
    SourceSpec,
    outcome_line,
    ticket_id_from,
)
from clients.ticket_files import explain
from workflows.contracts import Ticket, TicketState, WriteBackResult

API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Rate-limit waits up to this long happen in place; longer ones end the poll (the next one resumes).
MAX_INLINE_WAIT = 30.0
MAX_PAGES = 50
_OWNER_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_DEPENDS = re.compile(r"(?im)^\s*depends[ _-]on:?\s*((?:#\d+[\s,]*)+)")
_PRIORITY_LABEL = re.compile(r"(?i)^(?:priority[:/ -]?|p)([1-5])$")
_PRIORITY_WORDS = {"critical": 1, "urgent": 1, "high": 2, "medium": 3, "low": 4}


class GitHubIssuesSource:
    """GitHub's issues; Gitea's (clients/sources/gitea_issues.py) reuse all but labels and auth."""

    host = "GitHub"
    web_url = "https://github.com"

    def __init__(self, spec: SourceSpec, token: SecretStr | None) -> None:
        if not _OWNER_REPO.fullmatch(spec.location):
            raise SourceError(f"{spec.kind} source {spec.location!r} is not OWNER/REPO")
        self.owner_repo = spec.location
        self.label = spec.params.get("label", "ticketflow")
        self.api_url = spec.params.get("api", API_URL).rstrip("/")
        self.spec = spec
        self._token = token
        self.transport: httpx.AsyncBaseTransport | None = None  # tests put a fake host here

    # ------------------------------------------------------------------------------------ intake

    async def fetch(self) -> Fetched:
        found = Fetched()
        for issue in await self._open_issues(found):
            try:
                found.tickets.append(self.ticket_from_issue(issue))
            except ValidationError as exc:
                found.errors.append(f"{self.owner_repo}#{issue.get('number')}: {explain(exc)}")
        return found

    async def known_ids(self) -> set[str]:
        return set()  # issues outside the label are not fetched; dependencies on them are checked in Temporal

    async def done_ids(self) -> set[str]:
        return set()

    async def mark_started(self, ticket: Ticket) -> None:
        return None

    def ticket_id(self, number: int | str) -> str:
        return ticket_id_from(self.owner_repo.replace("/", "-"), str(number))

    def ticket_from_issue(self, issue: dict[str, Any]) -> Ticket:
        names = [str(label.get("name", "")) for label in issue.get("labels") or [] if isinstance(label, dict)]
        body = str(issue.get("body") or "").strip()
        deps = [self.ticket_id(n) for m in _DEPENDS.findall(body) for n in re.findall(r"#(\d+)", m)]
        return Ticket.model_validate(
            {
                "id": self.ticket_id(issue["number"]),
                "title": str(issue.get("title", "")),
                "body": body or str(issue.get("title", "")),
                "repo": self.spec.params.get("repo") or f"{self.web_url}/{self.owner_repo}.git",
                "base_branch": self.spec.params.get("base") or "main",
                "labels": [n for n in names if n != self.label and _priority(n) is None][:20],
                "priority": next((p for p in map(_priority, names) if p is not None), 3),
                "depends_on": deps,
                "source": self.spec.item_ref(str(issue["number"])),
            }
        )

    async def _open_issues(self, found: Fetched) -> list[dict[str, Any]]:
        issues: list[dict[str, Any]] = []
        params: dict[str, str] | None = {"labels": self.label, "state": "open", **self._page_params}
        url: str | None = f"/repos/{self.owner_repo}/issues"
        async with self._client() as client:
            for _ in range(MAX_PAGES):
                if url is None:
                    break
                resp = await _request(client, "GET", url, params=params, host=self.host)
                # Pull requests are issues too in this API; only real issues become tickets.
                issues += [i for i in resp.json() if isinstance(i, dict) and not i.get("pull_request")]
                # The next link carries the whole query; passing params again would replace it.
                url, params = resp.links.get("next", {}).get("url"), None
                if url and resp.headers.get("x-ratelimit-remaining") == "0":
                    found.errors.append(
                        f"{self.owner_repo}: rate limit reached; the next poll reads the rest"
                    )
                    break
        return issues

    # -------------------------------------------------------------------------------- write-back

    async def write_back(
        self, ticket: Ticket, state: TicketState, pr_url: str | None, reason: str
    ) -> WriteBackResult:
        number = ticket.source.rpartition("#")[2] if ticket.source else ""
        if not number.isdigit():
            raise SourceError(f"ticket {ticket.id}: {ticket.source!r} names no issue number")
        line = outcome_line(state, pr_url, reason)
        base = f"/repos/{self.owner_repo}/issues/{number}"
        async with self._client() as client:
            params = dict(self._page_params)
            comments = (
                await _request(client, "GET", f"{base}/comments", params=params, host=self.host)
            ).json()
            commented = any(line in str(c.get("body", "")) for c in comments if isinstance(c, dict))
            if not commented:
                await _request(client, "POST", f"{base}/comments", json={"body": line}, host=self.host)
            await self._relabel(client, base, state)
        return WriteBackResult(changed=not commented, action=f"{self.owner_repo}#{number}: {line}")

    async def add_follow_up(self, parent: Ticket, follow_up: FollowUp) -> str | None:
        """An issue labelled `<label>:follow-up` (not the intake label: a human decides to run it)."""
        marker = f"<!-- ticketflow-follow-up: {follow_up.ticket_id} -->"
        label = f"{self.label}:follow-up"
        async with self._client() as client:
            params = {"labels": label, "state": "all", **self._page_params}
            path = f"/repos/{self.owner_repo}/issues"
            existing = (await _request(client, "GET", path, params=params, host=self.host)).json()
            found = next((i for i in existing if marker in str(i.get("body") or "")), None)
            if found is None:
                payload = {
                    "title": follow_up.title,
                    "body": f"{follow_up.body}\n\n{marker}",
                    "labels": await self._label_refs(client, [label]),
                }
                found = (await _request(client, "POST", path, json=payload, host=self.host)).json()
        return f"{self.owner_repo}#{found['number']}"

    async def _relabel(self, client: httpx.AsyncClient, base: str, state: TicketState) -> None:
        outcome = {TicketState.DONE: "done", TicketState.BLOCKED: "blocked"}.get(state, "failed")
        stale = [self.label] if state is not TicketState.BLOCKED else []
        stale += [f"{self.label}:blocked"] if outcome != "blocked" else []
        for name in stale:
            await self._remove_label(client, base, name)
        labels = await self._label_refs(client, [f"{self.label}:{outcome}"])
        await _request(client, "POST", f"{base}/labels", json={"labels": labels}, host=self.host)

    # What Gitea does differently (gitea_issues.py): paging, label ids, auth.
    _page_params: dict[str, str] = {"per_page": "100"}

    async def _label_refs(self, client: httpx.AsyncClient, names: list[str]) -> list[Any]:
        return list(names)

    async def _remove_label(self, client: httpx.AsyncClient, base: str, name: str) -> None:
        await _request(client, "DELETE", f"{base}/labels/{name}", missing_ok=True, host=self.host)

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return httpx.AsyncClient(
            base_url=self.api_url, headers=headers, timeout=TIMEOUT, transport=self.transport
        )


def _priority(label: str) -> int | None:
    match = _PRIORITY_LABEL.match(label.strip())
    if match:
        return int(match.group(1))
    word = label.lower().removeprefix("priority:").removeprefix("priority/").strip()
    return _PRIORITY_WORDS.get(word) if label.lower().startswith("priority") else None


async def _request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    params: dict[str, str] | None = None,
    json: dict[str, Any] | None = None,
    missing_ok: bool = False,
    host: str = "GitHub",
) -> httpx.Response:
    """One call; a short rate-limit wait is honoured once in place, a long one becomes a retryable error."""
    for attempt in (1, 2):
        try:
            resp = await client.request(method, url, params=params, json=json)
        except httpx.HTTPError as exc:
            raise SourceError(f"{host} unreachable: {type(exc).__name__}", retryable=True) from None
        if resp.is_success or (missing_ok and resp.status_code == 404):
            return resp
        message = _message(resp)
        wait = rate_limit_wait(resp.status_code, resp.headers, message)
        if wait is not None and wait <= MAX_INLINE_WAIT and attempt == 1:
            await asyncio.sleep(wait)
            continue
        error = error_for_status(resp.status_code, resp.headers, message)
        raise SourceError(f"{host} issues: {error}", retryable=error.retryable, retry_after=error.retry_after)
    raise AssertionError("unreachable")


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase
    return str(data.get("message", resp.reason_phrase)) if isinstance(data, dict) else resp.reason_phrase

"""GitHub (or GitHub Enterprise) pull requests over the REST API, version 2022-11-28."""

from __future__ import annotations

import re
from typing import Any

import httpx
from pydantic import SecretStr

from activities.githosts.base import GitHostError, PullRequestSpec, credential_env, error_for_status
from workflows.contracts import PullRequestRef

API_VERSION = "2022-11-28"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_OWNER_REPO = re.compile(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/?$")


def owner_repo_from_url(url: str) -> str:
    """`acme/widgets` from https://github.com/acme/widgets(.git) or git@github.com:acme/widgets.git."""
    match = _OWNER_REPO.search(url)
    if not match:
        raise GitHostError(
            f"cannot tell owner/repo from {url!r}; set github_repo", kind="rejected", retryable=False
        )
    return f"{match.group(1)}/{match.group(2)}"


class GitHubHost:
    name = "github"

    def __init__(self, api_url: str, owner_repo: str, token: SecretStr | None, *, repo_url: str = "") -> None:
        self.api_url = api_url.rstrip("/")
        self.owner_repo = owner_repo
        self.owner = owner_repo.split("/", 1)[0]
        self.repo_url = repo_url
        self._token = token

    def push_env(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return credential_env(self.repo_url, "x-access-token", self._token.get_secret_value())

    async def find_open_pr(self, branch: str, base: str) -> PullRequestRef | None:
        async with self._client() as client:
            return await self._find(client, branch, base)

    async def open_pr(self, spec: PullRequestSpec) -> PullRequestRef:
        async with self._client() as client:
            ref = await self._find(client, spec.head, spec.base) or await self._create(client, spec)
            if spec.labels:
                # Adding labels is idempotent, and re-applying them finishes a run that died after creating.
                await _call(client, "POST", f"/issues/{ref.number}/labels", {"labels": list(spec.labels)})
            return ref

    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None:
        params = {"head": f"{self.owner}:{branch}", "base": base, "state": "open"}
        pulls = await _call(client, "GET", "/pulls", params=params)
        return self._ref(pulls[0], created=False) if pulls else None

    async def _create(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> PullRequestRef:
        payload = {
            "title": spec.title,
            "head": spec.head,
            "base": spec.base,
            "body": spec.body,
            "draft": spec.draft,
        }
        try:
            return self._ref(await _call(client, "POST", "/pulls", payload), created=True)
        except GitHostError as exc:
            # Lost a race (or the list lagged): GitHub says it exists, so look it up again.
            if exc.kind != "rejected" or "already exists" not in str(exc):
                raise
        found = await self._find(client, spec.head, spec.base)
        if found is None:
            raise GitHostError(
                f"GitHub reports a PR for {spec.head!r} but none is open", kind="unavailable", retryable=True
            )
        return found

    def _ref(self, pull: dict[str, Any], *, created: bool) -> PullRequestRef:
        head = pull.get("head") or {}
        return PullRequestRef(
            url=str(pull["html_url"]),
            number=int(pull["number"]),
            branch=str(head.get("ref", "")),
            host=self.name,
            created=created,
            head_commit=head.get("sha") or None,
        )

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return httpx.AsyncClient(
            base_url=f"{self.api_url}/repos/{self.owner_repo}", headers=headers, timeout=TIMEOUT
        )


async def _call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    *,
    params: dict[str, str] | None = None,
) -> Any:
    try:
        resp = await client.request(method, path, json=payload, params=params)
    except httpx.HTTPError as exc:
        # Only the exception class: httpx messages can embed the URL, never the headers, but stay terse.
        raise GitHostError(
            f"GitHub unreachable: {type(exc).__name__}", kind="unavailable", retryable=True
        ) from None
    if resp.is_success:
        return resp.json()
    raise error_for_status(resp.status_code, resp.headers, _message(resp))


def _message(resp: httpx.Response) -> str:
    """GitHub's own message plus any validation error messages, e.g. 'A pull request already exists'."""
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase
    if not isinstance(data, dict):
        return resp.reason_phrase
    errors = [e.get("message", "") for e in data.get("errors", []) if isinstance(e, dict)]
    return "; ".join(m for m in [str(data.get("message", resp.reason_phrase)), *errors] if m)

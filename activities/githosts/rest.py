"""What the REST hosts (GitHub, GitLab, Gitea) share: the request, its error mapping, find-or-create.

A host module subclasses RestHost and keeps only what differs: where its API lives and how the token is
sent, how it lists and creates a pull (merge) request, and how labels are attached. Every failure is a
GitHostError: an unreachable host is retryable, a failed response is classified by error_for_status
(rate limit with its wait, auth, host error, rejected).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import httpx
from pydantic import SecretStr

from activities.githosts.base import GitHostError, PullRequestSpec, credential_env, error_for_status
from workflows.contracts import PullRequestRef

TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class RestHost(ABC):
    """A GitHost over HTTP; subclasses set the class attributes and implement the abstract methods."""

    name: str
    label: str  # the host as messages name it, e.g. "GitHub"
    push_username: str  # what the git credential helper answers next to the token
    auth_header: str = "Authorization"
    auth_prefix: str = ""  # e.g. "Bearer ": the header's value is prefix + token
    accept: dict[str, str] = {"Accept": "application/json"}
    create_path: str = "/pulls"
    pr_noun: str = "a PR"

    def __init__(self, api_url: str, token: SecretStr | None, *, repo_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.repo_url = repo_url
        self._token = token

    def push_env(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return credential_env(self.repo_url, self.push_username, self._token.get_secret_value())

    async def find_open_pr(self, branch: str, base: str) -> PullRequestRef | None:
        async with self._client() as client:
            return await self._find(client, branch, base)

    async def open_pr(self, spec: PullRequestSpec) -> PullRequestRef:
        async with self._client() as client:
            ref = await self._find(client, spec.head, spec.base) or await self._create(client, spec)
            if spec.labels:
                # Adding labels is idempotent, and re-applying them finishes a run that died after creating.
                await self._add_labels(client, ref.number, spec.labels)
            return ref

    # ---- what each host supplies

    @abstractmethod
    def _repo_api(self) -> str:
        """The URL the request paths of this repository are relative to."""

    @abstractmethod
    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None: ...

    @abstractmethod
    def _create_payload(self, spec: PullRequestSpec) -> dict[str, Any]: ...

    @abstractmethod
    async def _add_labels(self, client: httpx.AsyncClient, number: int, labels: tuple[str, ...]) -> None: ...

    def _ref(self, pull: dict[str, Any], *, created: bool) -> PullRequestRef:
        """A pull request as GitHub's API returns it (Gitea's mirrors it; GitLab overrides this)."""
        head = pull.get("head") or {}
        return PullRequestRef(
            url=str(pull["html_url"]),
            number=int(pull["number"]),
            branch=str(head.get("ref", "")),
            host=self.name,
            created=created,
            head_commit=head.get("sha") or None,
        )

    # ---- shared mechanics

    async def _create(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> PullRequestRef:
        try:
            pull = await self._call(client, "POST", self.create_path, self._create_payload(spec))
            return self._ref(pull, created=True)
        except GitHostError as exc:
            # Lost a race (or the list lagged): the host says it exists (GitHub's 422, GitLab's and Gitea's
            # 409, all "rejected"), so look it up again.
            if exc.kind != "rejected" or "already exists" not in str(exc):
                raise
        found = await self._find(client, spec.head, spec.base)
        if found is None:
            raise GitHostError(
                f"{self.label} reports {self.pr_noun} for {spec.head!r} but none is open",
                kind="unavailable",
                retryable=True,
            )
        return found

    async def _call(
        self,
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
                f"{self.label} unreachable: {type(exc).__name__}", kind="unavailable", retryable=True
            ) from None
        if resp.is_success:
            return resp.json() if resp.content else None
        raise error_for_status(resp.status_code, resp.headers, message_of(resp))

    def _client(self) -> httpx.AsyncClient:
        headers = dict(self.accept)
        if self._token is not None:
            headers[self.auth_header] = self.auth_prefix + self._token.get_secret_value()
        return httpx.AsyncClient(base_url=self._repo_api(), headers=headers, timeout=TIMEOUT)


def message_of(resp: httpx.Response) -> str:
    """The host's own words from an error body, e.g. 'A pull request already exists'.

    GitLab and Gitea put a string, a list or a field->errors mapping under `message` (or `error`);
    GitHub puts a string there and adds validation errors, each with its own `message`, under `errors`.
    """
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase
    if not isinstance(data, dict):
        return resp.reason_phrase
    message = data.get("message", data.get("error", resp.reason_phrase))
    if isinstance(message, list):
        message = "; ".join(str(m) for m in message)
    elif isinstance(message, dict):
        message = "; ".join(f"{k}: {v}" for k, v in message.items())
    # Gitea sends `errors` as null or a list of strings; only GitHub's objects carry messages.
    raw = data.get("errors")
    errors = [e.get("message", "") for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
    return "; ".join(m for m in [str(message), *errors] if m)

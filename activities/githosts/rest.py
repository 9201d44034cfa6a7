"""What the REST hosts (GitHub, GitLab, Gitea) share: the request, its error mapping, find-or-create.

A host module subclasses RestHost and keeps only what differs: where its API lives and how the token is
sent, how it lists and creates a pull (merge) request, and how labels are attached. Every failure is a
GitHostError: an unreachable host is retryable, a failed response is classified by error_for_status
(rate limit with its wait, auth, host error, rejected).

Reviewers are a courtesy, not part of the PR: a reviewer the host refuses (the PR's author, not a
collaborator, no such user) is a logged warning and the PR still opens. Only a retryable failure (rate
limit, host down) is raised, because a retried attempt finds the PR and asks again harmlessly.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio import activity

from activities.githosts.base import GitHostError, PullRequestSpec, credential_env, error_for_status
from workflows.contracts import PullRequestRef

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
log = logging.getLogger("ticketflow.githosts")


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

    def __init__(
        self, api_url: str, token: SecretStr | None, *, repo_url: str, reviewers: tuple[str, ...] = ()
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.repo_url = repo_url
        self.reviewers = reviewers  # user names asked to review every PR this host opens
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
            if self.reviewers:
                # Also on a found PR, for the same reason: requesting a requested reviewer changes nothing.
                await self._request_reviewers(client, ref.number)
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

    async def _request_reviewers(self, client: httpx.AsyncClient, number: int) -> None:
        """GitHub's and Gitea's review request (GitLab overrides it): all names at once, and when the host
        refuses that, one by one, so one bad name (it fails the whole request) costs only itself."""
        refused = await self._ask_review(client, number, self.reviewers)
        if refused is None:
            return
        if len(self.reviewers) == 1:
            self._warn_reviewer(number, self.reviewers[0], refused)
            return
        for name in self.reviewers:
            reason = await self._ask_review(client, number, (name,))
            if reason is not None:
                self._warn_reviewer(number, name, reason)

    async def _ask_review(self, client: httpx.AsyncClient, number: int, names: tuple[str, ...]) -> str | None:
        """None when the host took the request, else why it refused; a retryable failure is raised."""
        try:
            path = f"/pulls/{number}/requested_reviewers"
            await self._call(client, "POST", path, {"reviewers": list(names)})
        except GitHostError as exc:
            if exc.retryable:
                raise
            return str(exc)
        return None

    def _warn_reviewer(self, number: int, name: str, reason: str) -> None:
        noun = self.pr_noun.split()[-1]  # "PR", "MR"
        self._warn(f"{self.label} {noun} #{number}: review not requested from {name!r}: {reason}")

    def _warn(self, message: str) -> None:
        """A warning in the activity's log (with its ticket's workflow id) or, outside one, ours."""
        if self._token is not None:  # host messages never echo the token; this keeps it that way
            message = message.replace(self._token.get_secret_value(), "***")
        (activity.logger if activity.in_activity() else log).warning("%s", message)

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

    async def _create_body(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> dict[str, Any]:
        """The create call's payload; a host that must look something up first (GitLab) overrides this."""
        return self._create_payload(spec)

    async def _create(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> PullRequestRef:
        body = await self._create_body(client, spec)
        try:
            pull = await self._call(client, "POST", self.create_path, body)
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


class OwnerRepoHost(RestHost, ABC):
    """A host whose repository API is /repos/{owner}/{name} (GitHub, Gitea)."""

    def __init__(
        self,
        api_url: str,
        owner_repo: str,
        token: SecretStr | None,
        *,
        repo_url: str = "",
        reviewers: tuple[str, ...] = (),
    ) -> None:
        super().__init__(api_url, token, repo_url=repo_url, reviewers=reviewers)
        self.owner_repo = owner_repo

    @property
    def owner(self) -> str:
        return self.owner_repo.split("/", 1)[0]

    def _repo_api(self) -> str:
        return f"{self.api_url}/repos/{self.owner_repo}"

"""Gitea and Forgejo pull requests over their `/api/v1` REST API.

Two differences from GitHub matter: a duplicate PR is a 409 ("pull request already exists for these
targets"), and labels are ids, looked up by name (and created when missing, as GitHub does implicitly).
Gitea marks drafts with a `WIP:` title prefix.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from activities.githosts.base import GitHostError, PullRequestSpec, credential_env
from activities.githosts.gitlab import TIMEOUT, call
from workflows.contracts import PullRequestRef

DRAFT_PREFIX = "WIP: "
PAGE_LIMIT = 50
MAX_PAGES = 20
NEW_LABEL_COLOR = "#ededed"


class GiteaHost:
    name = "gitea"

    def __init__(self, api_url: str, owner_repo: str, token: SecretStr | None, *, repo_url: str = "") -> None:
        self.api_url = api_url.rstrip("/")
        self.owner_repo = owner_repo
        self.repo_url = repo_url
        self._token = token

    def push_env(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return credential_env(self.repo_url, "ticketflow", self._token.get_secret_value())

    async def find_open_pr(self, branch: str, base: str) -> PullRequestRef | None:
        async with self._client() as client:
            return await self._find(client, branch, base)

    async def open_pr(self, spec: PullRequestSpec) -> PullRequestRef:
        async with self._client() as client:
            ref = await self._find(client, spec.head, spec.base) or await self._create(client, spec)
            if spec.labels:
                ids = await self._label_ids(client, spec.labels)
                await call(client, "POST", f"/issues/{ref.number}/labels", {"labels": ids}, host="Gitea")
            return ref

    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None:
        for page in range(1, MAX_PAGES + 1):
            params = {"state": "open", "page": str(page), "limit": str(PAGE_LIMIT)}
            pulls = await call(client, "GET", "/pulls", params=params, host="Gitea")
            for pull in pulls or []:
                if (pull.get("head") or {}).get("ref") == branch and (pull.get("base") or {}).get(
                    "ref"
                ) == base:
                    return self._ref(pull, created=False)
            if len(pulls or []) < PAGE_LIMIT:
                return None
        return None

    async def _create(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> PullRequestRef:
        payload = {
            "head": spec.head,
            "base": spec.base,
            "title": f"{DRAFT_PREFIX}{spec.title}" if spec.draft else spec.title,
            "body": spec.body,
        }
        try:
            return self._ref(await call(client, "POST", "/pulls", payload, host="Gitea"), created=True)
        except GitHostError as exc:
            # Gitea answers a duplicate with 409, which error_for_status files under "rejected".
            if exc.kind != "rejected" or "already exists" not in str(exc):
                raise
        found = await self._find(client, spec.head, spec.base)
        if found is None:
            raise GitHostError(
                f"Gitea reports a PR for {spec.head!r} but none is open", kind="unavailable", retryable=True
            )
        return found

    async def _label_ids(self, client: httpx.AsyncClient, names: tuple[str, ...]) -> list[int]:
        existing = await call(client, "GET", "/labels", params={"limit": str(PAGE_LIMIT)}, host="Gitea")
        by_name = {str(label["name"]): int(label["id"]) for label in existing or []}
        for name in names:
            if name not in by_name:
                made = await call(
                    client, "POST", "/labels", {"name": name, "color": NEW_LABEL_COLOR}, host="Gitea"
                )
                by_name[name] = int(made["id"])
        return [by_name[name] for name in names]

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
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"token {self._token.get_secret_value()}"
        return httpx.AsyncClient(
            base_url=f"{self.api_url}/repos/{self.owner_repo}", headers=headers, timeout=TIMEOUT
        )

"""GitLab merge requests over the REST API v4 (gitlab.com or self-managed).

Draft MRs are marked with the `Draft:` title prefix, labels are a comma-separated string, and a duplicate
MR is GitLab's 409 whose `message` is a JSON array ("Another open merge request already exists for this
source branch: !12"). Reviewers are optional numeric user ids.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from activities.githosts.base import GitHostError, PullRequestSpec, credential_env, error_for_status
from workflows.contracts import PullRequestRef

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DRAFT_PREFIX = "Draft: "
_SCP_LIKE = re.compile(r"^[^@/]+@([^:]+):(.+)$")


def project_path_from_url(url: str) -> str:
    """`group/sub/project` from https://host/group/sub/project(.git) or git@host:group/project.git."""
    scp = _SCP_LIKE.match(url)
    path = scp.group(2) if scp else urlsplit(url).path
    path = path.strip("/").removesuffix(".git")
    if path.count("/") < 1:
        raise GitHostError(
            f"cannot tell the project path from {url!r}; set github_repo", kind="rejected", retryable=False
        )
    return path


def api_url_from_repo_url(url: str, suffix: str) -> str:
    """https://host/api/v4 (or /api/v1) for a repository URL on that host."""
    scp = _SCP_LIKE.match(url)
    host = scp.group(1) if scp else urlsplit(url).netloc
    scheme = "https" if scp or not urlsplit(url).scheme.startswith("http") else urlsplit(url).scheme
    return f"{scheme}://{host}{suffix}"


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    *,
    params: dict[str, str] | None = None,
    host: str = "GitLab",
) -> Any:
    try:
        resp = await client.request(method, path, json=payload, params=params)
    except httpx.HTTPError as exc:
        raise GitHostError(
            f"{host} unreachable: {type(exc).__name__}", kind="unavailable", retryable=True
        ) from None
    if resp.is_success:
        return resp.json() if resp.content else None
    raise error_for_status(resp.status_code, resp.headers, message_of(resp))


def message_of(resp: httpx.Response) -> str:
    """GitLab and Gitea put a string, a list or a field->errors mapping under `message` (or `error`)."""
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase
    if not isinstance(data, dict):
        return resp.reason_phrase
    message = data.get("message", data.get("error", resp.reason_phrase))
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)
    if isinstance(message, dict):
        return "; ".join(f"{k}: {v}" for k, v in message.items())
    return str(message)


class GitLabHost:
    name = "gitlab"

    def __init__(
        self,
        api_url: str,
        project: str,
        token: SecretStr | None,
        *,
        repo_url: str = "",
        reviewer_ids: tuple[int, ...] = (),
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.project = project
        self.repo_url = repo_url
        self.reviewer_ids = reviewer_ids
        self._token = token

    def push_env(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return credential_env(self.repo_url, "oauth2", self._token.get_secret_value())

    async def find_open_pr(self, branch: str, base: str) -> PullRequestRef | None:
        async with self._client() as client:
            return await self._find(client, branch, base)

    async def open_pr(self, spec: PullRequestSpec) -> PullRequestRef:
        async with self._client() as client:
            ref = await self._find(client, spec.head, spec.base) or await self._create(client, spec)
            if spec.labels:
                # add_labels is idempotent and finishes a run that died right after creating the MR.
                await call(
                    client, "PUT", f"/merge_requests/{ref.number}", {"add_labels": ",".join(spec.labels)}
                )
            return ref

    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None:
        params = {"state": "opened", "source_branch": branch, "target_branch": base}
        found = await call(client, "GET", "/merge_requests", params=params)
        return self._ref(found[0], created=False) if found else None

    async def _create(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> PullRequestRef:
        payload: dict[str, Any] = {
            "source_branch": spec.head,
            "target_branch": spec.base,
            "title": f"{DRAFT_PREFIX}{spec.title}" if spec.draft else spec.title,
            "description": spec.body,
        }
        if spec.labels:
            payload["labels"] = ",".join(spec.labels)
        if self.reviewer_ids:
            payload["reviewer_ids"] = list(self.reviewer_ids)
        try:
            return self._ref(await call(client, "POST", "/merge_requests", payload), created=True)
        except GitHostError as exc:
            if exc.kind != "rejected" or "already exists" not in str(exc):
                raise
        found = await self._find(client, spec.head, spec.base)
        if found is None:
            raise GitHostError(
                f"GitLab reports an MR for {spec.head!r} but none is open", kind="unavailable", retryable=True
            )
        return found

    def _ref(self, mr: dict[str, Any], *, created: bool) -> PullRequestRef:
        return PullRequestRef(
            url=str(mr["web_url"]),
            number=int(mr["iid"]),
            branch=str(mr.get("source_branch", "")),
            host=self.name,
            created=created,
            head_commit=mr.get("sha") or None,
        )

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["PRIVATE-TOKEN"] = self._token.get_secret_value()
        base = f"{self.api_url}/projects/{quote(self.project, safe='')}"
        return httpx.AsyncClient(base_url=base, headers=headers, timeout=TIMEOUT)

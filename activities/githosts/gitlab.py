"""GitLab merge requests over the REST API v4 (gitlab.com or self-managed).

Draft MRs are marked with the `Draft:` title prefix, labels are a comma-separated string, and a duplicate
MR is GitLab's 409 whose `message` is a JSON array ("Another open merge request already exists for this
source branch: !12").

Reviewers are numeric user ids sent with the create call (`reviewer_ids`), so an MR never exists without
them: configured user names are looked up first (`GET /users?username=`, exact match). A name GitLab does
not know is a logged warning and the MR opens with the others. A found MR's reviewers are left alone: the
create call set them, and GitLab's update replaces the whole set, undoing whatever a human changed since.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from activities.githosts.base import GitHostError, PullRequestSpec
from activities.githosts.rest import RestHost
from workflows.contracts import PullRequestRef

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


class GitLabHost(RestHost):
    name = "gitlab"
    label = "GitLab"
    push_username = "oauth2"
    auth_header = "PRIVATE-TOKEN"
    create_path = "/merge_requests"
    pr_noun = "an MR"

    def __init__(
        self,
        api_url: str,
        project: str,
        token: SecretStr | None,
        *,
        repo_url: str = "",
        reviewers: tuple[str, ...] = (),
        reviewer_ids: tuple[int, ...] = (),
    ) -> None:
        super().__init__(api_url, token, repo_url=repo_url, reviewers=reviewers)
        self.project = project
        self.reviewer_ids = reviewer_ids

    def _repo_api(self) -> str:
        return f"{self.api_url}/projects/{quote(self.project, safe='')}"

    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None:
        params = {"state": "opened", "source_branch": branch, "target_branch": base}
        found = await self._call(client, "GET", "/merge_requests", params=params)
        return self._ref(found[0], created=False) if found else None

    def _create_payload(self, spec: PullRequestSpec) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "source_branch": spec.head,
            "target_branch": spec.base,
            "title": f"{DRAFT_PREFIX}{spec.title}" if spec.draft else spec.title,
            "description": spec.body,
        }
        if spec.labels:
            payload["labels"] = ",".join(spec.labels)
        return payload

    async def _create_body(self, client: httpx.AsyncClient, spec: PullRequestSpec) -> dict[str, Any]:
        payload = self._create_payload(spec)
        ids = [*self.reviewer_ids]
        for name in self.reviewers:
            user_id = await self._user_id(client, name)
            if user_id is not None:
                ids.append(user_id)
        if ids:
            payload["reviewer_ids"] = list(dict.fromkeys(ids))
        return payload

    async def _user_id(self, client: httpx.AsyncClient, name: str) -> int | None:
        """The id of the user called `name`, or None (warned) when GitLab has none or will not say."""
        try:
            # /users is at the API root, not under the project: an absolute URL overrides the base URL.
            users = await self._call(client, "GET", f"{self.api_url}/users", params={"username": name})
        except GitHostError as exc:
            if exc.retryable:
                raise  # nothing is created yet; the retried attempt looks up again
            self._warn(f"GitLab: cannot look up reviewer {name!r}, not requested: {exc}")
            return None
        # `username` is an exact (case-insensitive) match on GitLab; checking again costs nothing.
        match = next((u for u in users or [] if str(u.get("username", "")).lower() == name.lower()), None)
        if match is None:
            self._warn(f"GitLab has no user {name!r}: not requested as a reviewer of the MR")
            return None
        return int(match["id"])

    async def _request_reviewers(self, client: httpx.AsyncClient, number: int) -> None:
        """Nothing to do: the create call carried the reviewers (see the module's docstring)."""

    async def _add_labels(self, client: httpx.AsyncClient, number: int, labels: tuple[str, ...]) -> None:
        await self._call(client, "PUT", f"/merge_requests/{number}", {"add_labels": ",".join(labels)})

    def _ref(self, mr: dict[str, Any], *, created: bool) -> PullRequestRef:
        return PullRequestRef(
            url=str(mr["web_url"]),
            number=int(mr["iid"]),
            branch=str(mr.get("source_branch", "")),
            host=self.name,
            created=created,
            head_commit=mr.get("sha") or None,
        )

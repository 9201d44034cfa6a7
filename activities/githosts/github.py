"""GitHub (or GitHub Enterprise) pull requests over the REST API, version 2022-11-28.

Reviewers are requested after the PR exists (`POST /pulls/{number}/requested_reviewers`, RestHost's
request); GitHub answers 422 for the PR's author or a user who is not a collaborator.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from activities.githosts.base import GitHostError, PullRequestSpec
from activities.githosts.rest import OwnerRepoHost
from workflows.contracts import PullRequestRef

API_VERSION = "2022-11-28"
_OWNER_REPO = re.compile(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/?$")


def owner_repo_from_url(url: str) -> str:
    """`acme/widgets` from https://github.com/acme/widgets(.git) or git@github.com:acme/widgets.git."""
    match = _OWNER_REPO.search(url)
    if not match:
        raise GitHostError(
            f"cannot tell owner/repo from {url!r}; set github_repo", kind="rejected", retryable=False
        )
    return f"{match.group(1)}/{match.group(2)}"


class GitHubHost(OwnerRepoHost):
    name = "github"
    label = "GitHub"
    push_username = "x-access-token"
    auth_prefix = "Bearer "
    accept = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}

    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None:
        params = {"head": f"{self.owner}:{branch}", "base": base, "state": "open"}
        pulls = await self._call(client, "GET", "/pulls", params=params)
        return self._ref(pulls[0], created=False) if pulls else None

    def _create_payload(self, spec: PullRequestSpec) -> dict[str, Any]:
        return {
            "title": spec.title,
            "head": spec.head,
            "base": spec.base,
            "body": spec.body,
            "draft": spec.draft,
        }

    async def _add_labels(self, client: httpx.AsyncClient, number: int, labels: tuple[str, ...]) -> None:
        await self._call(client, "POST", f"/issues/{number}/labels", {"labels": list(labels)})

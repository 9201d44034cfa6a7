"""Gitea and Forgejo pull requests over their `/api/v1` REST API.

Two differences from GitHub matter: a duplicate PR is a 409 ("pull request already exists for these
targets"), and labels are ids, looked up by name (and created when missing, as GitHub does implicitly).
Gitea marks drafts with a `WIP:` title prefix. Reviewers go to GitHub's path with GitHub's body
(`POST /pulls/{index}/requested_reviewers`, `{"reviewers": [names]}`), so RestHost's request serves both;
Gitea answers 404 for an unknown user and 422 for one who may not review.
"""

from __future__ import annotations

from typing import Any

import httpx

from activities.githosts.base import PullRequestSpec
from activities.githosts.rest import OwnerRepoHost
from workflows.contracts import PullRequestRef

DRAFT_PREFIX = "WIP: "
PAGE_LIMIT = 50
MAX_PAGES = 20
NEW_LABEL_COLOR = "#ededed"


class GiteaHost(OwnerRepoHost):
    name = "gitea"
    label = "Gitea"
    push_username = "ticketflow"
    auth_prefix = "token "

    async def _find(self, client: httpx.AsyncClient, branch: str, base: str) -> PullRequestRef | None:
        for page in range(1, MAX_PAGES + 1):
            params = {"state": "open", "page": str(page), "limit": str(PAGE_LIMIT)}
            pulls = await self._call(client, "GET", "/pulls", params=params) or []
            for pull in pulls:
                if (pull.get("head") or {}).get("ref") == branch and (pull.get("base") or {}).get(
                    "ref"
                ) == base:
                    return self._ref(pull, created=False)
            if len(pulls) < PAGE_LIMIT:
                return None
        return None

    def _create_payload(self, spec: PullRequestSpec) -> dict[str, Any]:
        return {
            "head": spec.head,
            "base": spec.base,
            "title": f"{DRAFT_PREFIX}{spec.title}" if spec.draft else spec.title,
            "body": spec.body,
        }

    async def _add_labels(self, client: httpx.AsyncClient, number: int, labels: tuple[str, ...]) -> None:
        ids = await self._label_ids(client, labels)
        await self._call(client, "POST", f"/issues/{number}/labels", {"labels": ids})

    async def _label_ids(self, client: httpx.AsyncClient, names: tuple[str, ...]) -> list[int]:
        existing = await self._call(client, "GET", "/labels", params={"limit": str(PAGE_LIMIT)})
        by_name = {str(label["name"]): int(label["id"]) for label in existing or []}
        for name in names:
            if name not in by_name:
                made = await self._call(client, "POST", "/labels", {"name": name, "color": NEW_LABEL_COLOR})
                by_name[name] = int(made["id"])
        return [by_name[name] for name in names]

"""Gitea (and Forgejo) issues carrying a label, over `/api/v1`: GitHub's paths and payloads, with three
differences. The API root is the instance's (`api=https://gitea.example/api/v1`, required), paging is
`limit` (at most 50) with Link headers, and labels are ids on an issue: names are looked up in the
repository's labels and created when missing, as GitHub does implicitly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from clients.sources.base import SourceError, SourceSpec
from clients.sources.github_issues import TIMEOUT, GitHubIssuesSource, _request

NEW_LABEL_COLOR = "#ededed"
LABEL_PAGES = 20


class GiteaIssuesSource(GitHubIssuesSource):
    host = "Gitea"
    _page_params = {"type": "issues", "limit": "50"}

    def __init__(self, spec: SourceSpec, token: SecretStr | None) -> None:
        if "api" not in spec.params:
            raise SourceError(
                f"gitea source {spec.location!r} needs its instance's API: ?api=https://HOST/api/v1"
            )
        super().__init__(spec, token)
        root = urlsplit(self.api_url)
        self.web_url = f"{root.scheme}://{root.netloc}{root.path.removesuffix('/api/v1')}".rstrip("/")

    async def _label_ids(self, client: httpx.AsyncClient, create: list[str]) -> dict[str, int]:
        path = f"/repos/{self.owner_repo}/labels"
        by_name: dict[str, int] = {}
        for page in range(1, LABEL_PAGES + 1):
            params = {"limit": "50", "page": str(page)}
            labels = (await _request(client, "GET", path, params=params, host=self.host)).json()
            by_name |= {str(label["name"]): int(label["id"]) for label in labels if isinstance(label, dict)}
            if len(labels) < 50:
                break
        for name in create:
            if name not in by_name:
                payload = {"name": name, "color": NEW_LABEL_COLOR}
                made = (await _request(client, "POST", path, json=payload, host=self.host)).json()
                by_name[name] = int(made["id"])
        return by_name

    async def _label_refs(self, client: httpx.AsyncClient, names: list[str]) -> list[Any]:
        ids = await self._label_ids(client, names)
        return [ids[name] for name in names]

    async def _remove_label(self, client: httpx.AsyncClient, base: str, name: str) -> None:
        label = (await self._label_ids(client, [])).get(name)
        if label is not None:
            await _request(client, "DELETE", f"{base}/labels/{label}", missing_ok=True, host=self.host)

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"token {self._token.get_secret_value()}"
        return httpx.AsyncClient(
            base_url=self.api_url, headers=headers, timeout=TIMEOUT, transport=self.transport
        )

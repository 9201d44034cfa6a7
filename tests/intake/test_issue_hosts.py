"""Gitea and GitLab issue sources against fakes of their REST APIs (in-process httpx transports that
keep issues, labels and comments the way those hosts do): intake with paging, write-back, follow-ups."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest
from pydantic import SecretStr

from activities.settings import Settings
from clients.sources import SourceError, open_source
from clients.sources.base import FollowUp
from clients.sources.gitea_issues import GiteaIssuesSource
from clients.sources.gitlab_issues import GitLabIssuesSource
from workflows.contracts import TicketState

TOKEN = "host-token-123456"


def _answer(status: int, data: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=data, headers=headers or {})


class FakeGitea:
    """/api/v1 of one repository: issues (pulls among them), labels by id, comments."""

    root = "https://gitea.example/api/v1/repos/acme/widgets"

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.labels: dict[str, int] = {}
        self.comments: dict[int, list[str]] = {}
        self.requests: list[httpx.Request] = []

    def label(self, name: str) -> dict[str, Any]:
        if name not in self.labels:
            self.labels[name] = 100 + len(self.labels)
        return {"id": self.labels[name], "name": name}

    def add(self, title: str, labels: tuple[str, ...] = ("ticketflow",), pull: bool = False) -> int:
        number = len(self.issues) + 1
        self.issues.append(
            {
                "number": number,
                "title": title,
                "body": f"Do {title}.",
                "state": "open",
                "labels": [self.label(n) for n in labels],
                "pull_request": {"merged": False} if pull else None,
            }
        )
        return number

    def names(self, number: int) -> list[str]:
        return sorted(label["name"] for label in self.issues[number - 1]["labels"])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"token {TOKEN}":
            return _answer(401, {"message": "token is required"})
        path = str(request.url).split("?")[0].removeprefix(self.root)
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        data = json.loads(request.content) if request.content else {}
        parts = path.strip("/").split("/")
        if parts == ["issues"] and request.method == "GET":
            return self._list(query)
        if parts == ["issues"] and request.method == "POST":
            number = self.add(data["title"], ())
            issue = self.issues[number - 1]
            issue["body"] = data["body"]
            issue["labels"] = [{"id": i, "name": n} for n, i in self.labels.items() if i in data["labels"]]
            return _answer(201, issue)
        if parts == ["labels"] and request.method == "GET":
            page, limit = int(query.get("page", 1)), int(query["limit"])
            every = [{"id": i, "name": n} for n, i in self.labels.items()]
            return _answer(200, every[(page - 1) * limit : page * limit])
        if parts == ["labels"] and request.method == "POST":
            return _answer(201, self.label(data["name"]))
        number = int(parts[1])
        issue = self.issues[number - 1]
        if parts[2:] == ["comments"]:
            if request.method == "POST":
                self.comments.setdefault(number, []).append(data["body"])
                return _answer(201, {"body": data["body"]})
            return _answer(200, [{"body": b} for b in self.comments.get(number, [])])
        if parts[2:] == ["labels"] and request.method == "POST":
            known = {i: n for n, i in self.labels.items()}
            assert all(isinstance(i, int) for i in data["labels"]), "Gitea takes label ids"
            have = {label["id"] for label in issue["labels"]}
            issue["labels"] += [{"id": i, "name": known[i]} for i in data["labels"] if i not in have]
            return _answer(200, issue["labels"])
        if parts[2] == "labels" and request.method == "DELETE":
            label_id = int(parts[3])  # Gitea deletes by id
            issue["labels"] = [label for label in issue["labels"] if label["id"] != label_id]
            return httpx.Response(204)
        return _answer(404, {"message": "not found"})

    def _list(self, query: dict[str, str]) -> httpx.Response:
        assert query["type"] == "issues" and int(query["limit"]) <= 50
        wanted = set(query["labels"].split(","))
        found = [
            i
            for i in self.issues
            if (query["state"] == "all" or i["state"] == query["state"])
            and wanted <= {label["name"] for label in i["labels"]}
            and i["pull_request"] is None  # type=issues
        ]
        page, limit = int(query.get("page", 1)), int(query["limit"])
        headers = {}
        if page * limit < len(found):
            headers["Link"] = (
                f"<{self.root}/issues?labels={query['labels']}&state={query['state']}&type=issues"
                f'&limit={limit}&page={page + 1}>; rel="next"'
            )
        return _answer(200, found[(page - 1) * limit : page * limit], headers)


class FakeGitLab:
    """/api/v4 of one project: issues by iid with label names, notes, label changes by PUT."""

    root = "https://gitlab.example/api/v4/projects/acme%2Ftools%2Fwidgets"

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.notes: dict[int, list[str]] = {}
        self.requests: list[httpx.Request] = []

    def add(self, title: str, labels: tuple[str, ...] = ("ticketflow",)) -> int:
        iid = len(self.issues) + 1
        self.issues.append(
            {
                "iid": iid,
                "title": title,
                "description": f"Do {title}.",
                "state": "opened",
                "labels": list(labels),
            }
        )
        return iid

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("private-token") != TOKEN:
            return _answer(401, {"message": "401 Unauthorized"})
        raw = request.url.raw_path.decode().split("?")[0]
        assert raw.startswith("/api/v4/projects/acme%2Ftools%2Fwidgets"), raw  # the path, URL-encoded
        parts = unquote(raw.removeprefix("/api/v4/projects/acme%2Ftools%2Fwidgets")).strip("/").split("/")
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        data = json.loads(request.content) if request.content else {}
        if parts == ["issues"] and request.method == "GET":
            wanted = set(query["labels"].split(","))
            found = [
                i
                for i in self.issues
                if (query["state"] == "all" or i["state"] == query["state"]) and wanted <= set(i["labels"])
            ]
            page, size = int(query.get("page", 1)), int(query["per_page"])
            headers = {}
            if page * size < len(found):
                headers["Link"] = (
                    f"<{self.root}/issues?labels={query['labels']}&state={query['state']}"
                    f'&per_page={size}&page={page + 1}>; rel="next"'
                )
            return _answer(200, found[(page - 1) * size : page * size], headers)
        if parts == ["issues"] and request.method == "POST":
            iid = self.add(data["title"], tuple(data["labels"].split(",")))
            self.issues[iid - 1]["description"] = data["description"]
            return _answer(201, self.issues[iid - 1])
        iid = int(parts[1])
        issue = self.issues[iid - 1]
        if parts[2:] == ["notes"]:
            if request.method == "POST":
                self.notes.setdefault(iid, []).append(data["body"])
                return _answer(201, {"body": data["body"]})
            return _answer(200, [{"body": b} for b in self.notes.get(iid, [])])
        if parts[2:] == [] and request.method == "PUT":
            remove = set(filter(None, data.get("remove_labels", "").split(",")))
            add = [n for n in data.get("add_labels", "").split(",") if n and n not in issue["labels"]]
            issue["labels"] = [n for n in issue["labels"] if n not in remove] + add
            return _answer(200, issue)
        return _answer(404, {"message": "404 Not found"})


def settings() -> Settings:
    return Settings(gitea_token=SecretStr(TOKEN), gitlab_token=SecretStr(TOKEN))


def gitea_source(fake: FakeGitea, query: str = "") -> GiteaIssuesSource:
    source = open_source(f"gitea:acme/widgets?api=https://gitea.example/api/v1{query}", settings())
    assert isinstance(source, GiteaIssuesSource)
    source.transport = httpx.MockTransport(fake)
    return source


def gitlab_source(fake: FakeGitLab, query: str = "") -> GitLabIssuesSource:
    source = open_source(f"gitlab:acme/tools/widgets?api=https://gitlab.example/api/v4{query}", settings())
    assert isinstance(source, GitLabIssuesSource)
    source.transport = httpx.MockTransport(fake)
    return source


# ---------------------------------------------------------------------------------------- Gitea


async def test_gitea_issues_page_skip_pulls_and_map_fields() -> None:
    fake = FakeGitea()
    for n in range(1, 121):
        fake.add(f"Issue {n}", ("ticketflow",) if n % 2 else ("other",))
    fake.add("A pull request", pull=True)
    urgent = fake.add("Urgent", ("ticketflow", "P1", "bug"))

    fetched = await gitea_source(fake).fetch()

    assert len(fetched.tickets) == 61 and fetched.errors == []
    assert len([r for r in fake.requests if r.method == "GET"]) == 2  # 61 over pages of 50
    last = fetched.tickets[-1]
    assert (last.id, last.priority, last.labels, last.repo) == (
        f"acme-widgets-{urgent}",
        1,
        ["bug"],
        "https://gitea.example/acme/widgets.git",
    )
    assert last.source == f"gitea:acme/widgets?api=https://gitea.example/api/v1#{urgent}"


async def test_gitea_write_back_comments_once_and_relabels_by_id() -> None:
    fake = FakeGitea()
    number = fake.add("Fix", ("ticketflow", "bug"))
    source = gitea_source(fake, "&repo=calc")
    (ticket,) = (await source.fetch()).tickets

    await source.write_back(ticket, TicketState.BLOCKED, None, "which API?")
    blocked = fake.names(number)
    first = await source.write_back(
        ticket, TicketState.DONE, "https://gitea.example/acme/widgets/pulls/3", ""
    )
    again = await source.write_back(
        ticket, TicketState.DONE, "https://gitea.example/acme/widgets/pulls/3", ""
    )

    assert blocked == ["bug", "ticketflow", "ticketflow:blocked"]
    assert fake.names(number) == ["bug", "ticketflow:done"]
    assert first.changed and not again.changed
    assert fake.comments[number] == [
        "ticketflow: BLOCKED: which API?",
        "ticketflow: DONE, pull request https://gitea.example/acme/widgets/pulls/3",
    ]


async def test_gitea_follow_up_is_created_once() -> None:
    fake = FakeGitea()
    fake.add("Parent")
    source = gitea_source(fake)
    (parent,) = (await source.fetch()).tickets
    follow = FollowUp("acme-widgets-1-fu1", "Follow-up to acme-widgets-1: tidy", "Tidy it.", 4)

    first = await source.add_follow_up(parent, follow)
    second = await source.add_follow_up(parent, follow)

    assert first == second == "acme/widgets#2"
    assert fake.names(2) == ["ticketflow:follow-up"] and len(fake.issues) == 2


def test_gitea_source_needs_its_instance() -> None:
    with pytest.raises(SourceError, match=r"needs its instance's API: \?api=https://HOST/api/v1"):
        open_source("gitea:acme/widgets", settings())


# --------------------------------------------------------------------------------------- GitLab


async def test_gitlab_issues_page_and_map_fields() -> None:
    fake = FakeGitLab()
    for n in range(1, 151):
        fake.add(f"Issue {n}")
    fake.add("Other", ("bug",))
    fake.issues[0]["description"] = "Depends on: #2"

    fetched = await gitlab_source(fake).fetch()

    assert [t.title for t in fetched.tickets] == [f"Issue {n}" for n in range(1, 151)]
    assert len(fake.requests) == 2
    first = fetched.tickets[0]
    assert (first.id, first.depends_on, first.repo) == (
        "acme-tools-widgets-1",
        ["acme-tools-widgets-2"],
        "https://gitlab.example/acme/tools/widgets.git",
    )


async def test_gitlab_write_back_notes_once_and_relabels() -> None:
    fake = FakeGitLab()
    iid = fake.add("Fix", ("ticketflow", "bug"))
    source = gitlab_source(fake)
    (ticket,) = (await source.fetch()).tickets

    await source.write_back(ticket, TicketState.BLOCKED, None, "which API?")
    blocked = sorted(fake.issues[iid - 1]["labels"])
    first = await source.write_back(ticket, TicketState.FAILED, None, "no answer")
    again = await source.write_back(ticket, TicketState.FAILED, None, "no answer")

    assert blocked == ["bug", "ticketflow", "ticketflow:blocked"]
    assert sorted(fake.issues[iid - 1]["labels"]) == ["bug", "ticketflow:failed"]
    assert first.changed and not again.changed
    assert fake.notes[iid] == ["ticketflow: BLOCKED: which API?", "ticketflow: FAILED: no answer"]


async def test_gitlab_follow_up_is_created_once() -> None:
    fake = FakeGitLab()
    fake.add("Parent")
    source = gitlab_source(fake)
    (parent,) = (await source.fetch()).tickets
    follow = FollowUp("acme-tools-widgets-1-fu1", "Follow-up: tidy", "Tidy it.", 4)

    assert await source.add_follow_up(parent, follow) == "acme/tools/widgets#2"
    assert await source.add_follow_up(parent, follow) == "acme/tools/widgets#2"
    assert fake.issues[1]["labels"] == ["ticketflow:follow-up"] and len(fake.issues) == 2


async def test_a_wrong_token_is_a_clear_error() -> None:
    fake = FakeGitLab()
    source = open_source("gitlab:acme/tools/widgets?api=https://gitlab.example/api/v4", Settings())
    source.transport = httpx.MockTransport(fake)  # type: ignore[attr-defined]
    with pytest.raises(SourceError, match="GitLab issues"):
        await source.fetch()


def test_gitlab_source_needs_a_project_path() -> None:
    with pytest.raises(SourceError, match="is not GROUP/PROJECT"):
        open_source("gitlab:widgets", settings())

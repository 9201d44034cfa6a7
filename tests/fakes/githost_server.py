"""Our own GitHub, GitLab and Gitea REST subsets on 127.0.0.1, faithful to what ticketflow relies on.

GitHub: `GET/POST /repos/{o}/{r}/pulls` (head/base/state filters, 422 for a duplicate with GitHub's real
body), `POST .../pulls/{n}/requested_reviewers`, issue labels, and the issues API intake uses (label
filter, Link-header pagination, comments, label removal). GitLab: `GET/POST/PUT
/api/v4/projects/{id}/merge_requests` (409 with a message array for a duplicate, `reviewer_ids` on
create, `PRIVATE-TOKEN`) and `GET /api/v4/users?username=`. Gitea: `/api/v1/repos/{o}/{r}/pulls`,
`.../pulls/{index}/requested_reviewers` and labels by id (409 for a duplicate, `Authorization: token`).
Each answers 401 to a wrong token and takes injectable faults (rate limits, 5xx) for the next N requests.
Review requests are recorded as received (`review_requests`); one naming the PR's author or a user in
`rejected_reviewers` fails whole with the host's 422. Runs in a background thread so async clients on
the test's event loop can call it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
Fault = Literal["secondary_rate_limit", "primary_rate_limit", "server_error", "stale_list"]
Answer = tuple[int, dict[str, str], Any]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class FakeHost:
    """What every fake host shares: auth check, recorded requests, injected faults, one lock."""

    token: str
    owner: str = "acme"
    repo: str = "widgets"
    retry_after: int = 7
    reset_in: int = 42
    pulls: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    # Review requests: (PR number, names) as received, accepted or not; the token's user opens every PR.
    review_requests: list[tuple[int, list[str]]] = field(default_factory=list)
    rejected_reviewers: set[str] = field(default_factory=set)
    review_faults: list[Fault] = field(default_factory=list)  # rate limits or 5xx for review requests
    author: str = "ticketflow-bot"

    def inject(self, fault: Fault, times: int = 1) -> None:
        """The next `times` requests (of the matching kind, for stale_list) get this fault."""
        with self.lock:
            self.faults.extend([fault] * times)

    def handle(self, method: str, target: str, headers: dict[str, str], body: str) -> Answer:
        with self.lock:
            self.requests.append(Recorded(method, target, headers, body))
            if not self.authorized(headers):
                return self.unauthorized()
            fault = self._take_fault(method, target)
            if fault is not None:
                return fault
            return self.route(method, target, json.loads(body) if body else {})

    def authorized(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Answer:
        return 401, {}, {"message": "401 Unauthorized"}

    def route(self, method: str, target: str, data: dict[str, Any]) -> Answer:
        raise NotImplementedError

    def is_list(self, method: str, target: str) -> bool:
        return method == "GET" and ("/pulls" in target or "/merge_requests" in target)

    def rate_limited(self, primary: bool) -> Answer:
        """GitLab and Gitea: 429 with Retry-After (GitLab adds RateLimit-* headers)."""
        return (
            429,
            {"Retry-After": str(self.retry_after), "RateLimit-Remaining": "0"},
            {"message": "Retry later"},
        )

    def review_refusal(self, names: list[str]) -> str | None:
        """Why the host refuses a review request (it refuses the whole request), or None."""
        raise NotImplementedError

    def request_review(self, pull: dict[str, Any] | None, names: list[str]) -> Answer | None:
        """Record a review request and add its names to the PR (once each); an error Answer if refused."""
        if pull is None:
            return 404, {}, {"message": "Not Found"}
        self.review_requests.append((int(pull["number"]), list(names)))
        if self.review_faults:
            return self._fault_answer(self.review_faults.pop(0))
        refusal = self.review_refusal(names)
        if refusal is not None:
            return 422, {}, {"message": refusal}
        have = pull.setdefault("requested_reviewers", [])
        have += [{"login": n} for n in names if n not in [r["login"] for r in have]]
        return None

    def _take_fault(self, method: str, target: str) -> Answer | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault == "stale_list":
            if not self.is_list(method, target):
                return None
            self.faults.pop(0)
            return 200, {}, []
        self.faults.pop(0)
        return self._fault_answer(fault)

    def _fault_answer(self, fault: Fault) -> Answer:
        if fault in ("secondary_rate_limit", "primary_rate_limit"):
            return self.rate_limited(fault == "primary_rate_limit")
        return 500, {}, {"message": "Server Error"}


def _page(items: list[dict[str, Any]], query: dict[str, list[str]], base: str, size_key: str) -> Answer:
    """One page of a list plus GitHub's Link header (rel="next"/"last") when more pages exist."""
    size = int(query.get(size_key, ["30"])[0])
    page = int(query.get("page", ["1"])[0])
    chunk = items[(page - 1) * size : page * size]
    headers: dict[str, str] = {}
    last = max(1, -(-len(items) // size))
    if page < last:
        params = {k: v[0] for k, v in query.items() if k != "page"}
        link = f"{base}?{urlencode({**params, 'page': page + 1})}"
        headers["Link"] = f'<{link}>; rel="next", <{base}?{urlencode({**params, "page": last})}>; rel="last"'
    return 200, headers, chunk


@dataclass
class FakeGitHub(FakeHost):
    issues: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    rate_remaining: int | None = None

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") in (f"Bearer {self.token}", f"token {self.token}")

    def unauthorized(self) -> Answer:
        return (
            401,
            {},
            {
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
                "status": "401",
            },
        )

    def rate_limited(self, primary: bool) -> Answer:
        if not primary:
            return 429, {"Retry-After": str(self.retry_after)}, {"message": SECONDARY_LIMIT_MESSAGE}
        reset = int(time.time()) + self.reset_in
        return (
            403,
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": "5000",
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core",
            },
            {"message": f"API rate limit exceeded for user ID 1. (reset at {reset})"},
        )

    def review_refusal(self, names: list[str]) -> str | None:
        """GitHub's 422 messages, word for word."""
        if self.author in names:
            return "Review cannot be requested from pull request author."
        if any(n in self.rejected_reviewers for n in names):
            return (
                "Reviews may only be requested from collaborators. One or more of the users or teams you "
                f"specified is not a collaborator of the {self.owner}/{self.repo} repository."
            )
        return None

    def add_issue(self, title: str, body: str = "", labels: tuple[str, ...] = (), pull: bool = False) -> int:
        number = len(self.issues) + 1
        issue: dict[str, Any] = {
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "labels": [{"name": n} for n in labels],
            "html_url": f"https://github.com/{self.owner}/{self.repo}/issues/{number}",
        }
        if pull:
            issue["pull_request"] = {"url": "https://api.github.com/..."}
        self.issues.append(issue)
        return number

    def route(self, method: str, target: str, data: dict[str, Any]) -> Answer:
        parts = urlsplit(target)
        prefix = f"/repos/{self.owner}/{self.repo}"
        if not parts.path.startswith(prefix + "/"):
            return 404, {}, {"message": "Not Found"}
        rest = [unquote(p) for p in parts.path[len(prefix) :].rstrip("/").split("/")[1:]]
        query = parse_qs(parts.query)
        answer = self._route_rest(method, rest, query, data, self.url + parts.path)
        if self.rate_remaining is not None:
            answer[1].setdefault("x-ratelimit-remaining", str(self.rate_remaining))
        return answer

    def _route_rest(
        self, method: str, rest: list[str], query: dict[str, list[str]], data: dict[str, Any], base: str
    ) -> Answer:
        if rest == ["pulls"] and method == "GET":
            return 200, {}, self._list(query)
        if rest == ["pulls"] and method == "POST":
            return self._create(data)
        if len(rest) == 3 and rest[0] == "pulls" and rest[2] == "requested_reviewers" and method == "POST":
            pull = next((p for p in self.pulls if str(p["number"]) == rest[1]), None)
            refused = self.request_review(pull, [str(n) for n in data.get("reviewers", [])])
            return refused or (201, {}, pull)
        if rest == ["issues"] and method == "GET":
            return self._list_issues(query, base)
        if rest == ["issues"] and method == "POST":
            if not data.get("title"):
                return (
                    422,
                    {},
                    {"message": "Validation Failed", "errors": [{"field": "title", "code": "missing"}]},
                )
            number = self.add_issue(
                str(data["title"]), str(data.get("body") or ""), tuple(data.get("labels", []))
            )
            return 201, {}, self.issues[number - 1]
        if len(rest) >= 3 and rest[0] == "issues" and rest[1].isdigit():
            return self._issue_sub(method, int(rest[1]), rest[2:], data)
        return 404, {}, {"message": "Not Found"}

    def _issue_sub(self, method: str, number: int, rest: list[str], data: dict[str, Any]) -> Answer:
        if rest == ["labels"] and method == "POST":
            return self._label(number, data)
        if rest == ["comments"] and method == "GET":
            return 200, {}, self.comments.get(number, [])
        if rest == ["comments"] and method == "POST":
            comment = {"id": sum(map(len, self.comments.values())) + 1, "body": data.get("body", "")}
            self.comments.setdefault(number, []).append(comment)
            return 201, {}, comment
        if len(rest) == 2 and rest[0] == "labels" and method == "DELETE":
            issue = self._item(number)
            names = [label["name"] for label in issue["labels"]] if issue else []
            if issue is None or rest[1] not in names:
                return 404, {}, {"message": "Label does not exist"}
            issue["labels"] = [label for label in issue["labels"] if label["name"] != rest[1]]
            return 200, {}, issue["labels"]
        return 404, {}, {"message": "Not Found"}

    def _list_issues(self, query: dict[str, list[str]], base: str) -> Answer:
        wanted = [n for n in query.get("labels", [""])[0].split(",") if n]
        state = query.get("state", ["open"])[0]

        def keep(issue: dict[str, Any]) -> bool:
            names = {label["name"] for label in issue["labels"]}
            return (state == "all" or issue["state"] == state) and all(w in names for w in wanted)

        return _page([i for i in self.issues if keep(i)], query, base, "per_page")

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def keep(pull: dict[str, Any]) -> bool:
            return all(
                (
                    pull["state"] == query.get("state", ["open"])[0] or query.get("state") == ["all"],
                    "head" not in query or pull["head"]["label"] == query["head"][0],
                    "base" not in query or pull["base"]["ref"] == query["base"][0],
                )
            )

        return [p for p in self.pulls if keep(p)]

    def _create(self, data: dict[str, Any]) -> Answer:
        head, base = str(data.get("head", "")), str(data.get("base", ""))
        if not data.get("title") or not head or not base:
            return (
                422,
                {},
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "code": "missing_field", "field": "title"}],
                },
            )
        if self._list({"head": [f"{self.owner}:{head}"], "base": [base]}):
            return (
                422,
                {},
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {self.owner}:{head}.",
                        }
                    ],
                },
            )
        number = len(self.pulls) + 1
        pull = {
            "number": number,
            "html_url": f"https://github.com/{self.owner}/{self.repo}/pull/{number}",
            "state": "open",
            "title": data["title"],
            "body": data.get("body"),
            "draft": bool(data.get("draft")),
            "head": {
                "ref": head,
                "label": f"{self.owner}:{head}",
                "sha": hashlib.sha1(head.encode()).hexdigest(),
            },
            "base": {"ref": base, "label": f"{self.owner}:{base}"},
            "labels": [],
        }
        self.pulls.append(pull)
        return 201, {}, pull

    def _item(self, number: int) -> dict[str, Any] | None:
        """Pulls first (the PR tests), then issues (the intake tests); a test uses one or the other."""
        found = next((p for p in self.pulls if p["number"] == number), None)
        return found or next((i for i in self.issues if i["number"] == number), None)

    def _label(self, number: int, data: dict[str, Any]) -> Answer:
        item = self._item(number)
        if item is None:
            return 404, {}, {"message": "Not Found"}
        names = [label["name"] for label in item["labels"]]
        names += [n for n in data.get("labels", []) if n not in names]
        item["labels"] = [{"name": n} for n in names]
        return 200, {}, item["labels"]


@dataclass
class FakeGitLab(FakeHost):
    users: dict[str, int] = field(default_factory=dict)  # username -> id, for GET /users?username=

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("private-token") == self.token

    def route(self, method: str, target: str, data: dict[str, Any]) -> Answer:
        parts = urlsplit(target)
        if parts.path == "/api/v4/users" and method == "GET":
            return 200, {}, self._users(parse_qs(parts.query))
        prefix = f"/api/v4/projects/{quote(f'{self.owner}/{self.repo}', safe='')}/merge_requests"
        if not parts.path.startswith(prefix):
            return 404, {}, {"message": "404 Project Not Found"}
        rest = parts.path[len(prefix) :].strip("/")
        if not rest and method == "GET":
            return 200, {}, self._list(parse_qs(parts.query))
        if not rest and method == "POST":
            return self._create(data)
        if rest.isdigit() and method == "PUT":
            return self._update(int(rest), data)
        return 404, {}, {"message": "404 Not found"}

    def _users(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """GitLab's `username` filter: an exact match, case-insensitive, so zero or one user."""
        wanted = query.get("username", [None])[0]
        return [
            {"id": uid, "username": name, "state": "active", "web_url": f"https://gitlab.example/{name}"}
            for name, uid in self.users.items()
            if wanted is None or name.lower() == wanted.lower()
        ]

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def keep(mr: dict[str, Any]) -> bool:
            return all(
                query.get(key, [mr[key]])[0] == mr[key] for key in ("state", "source_branch", "target_branch")
            )

        return [mr for mr in self.pulls if keep(mr)]

    def _create(self, data: dict[str, Any]) -> Answer:
        source, target = str(data.get("source_branch", "")), str(data.get("target_branch", ""))
        if not data.get("title") or not source or not target:
            return 400, {}, {"message": {"title": ["can't be blank"]}}
        duplicate = self._list({"state": ["opened"], "source_branch": [source], "target_branch": [target]})
        if duplicate:
            message = (
                f"Another open merge request already exists for this source branch: !{duplicate[0]['iid']}"
            )
            return 409, {}, {"message": [message]}
        iid = len(self.pulls) + 1
        title = str(data["title"])
        labels = [n for n in str(data.get("labels", "")).split(",") if n]
        mr = {
            "id": 1000 + iid,
            "iid": iid,
            "web_url": f"https://gitlab.example/{self.owner}/{self.repo}/-/merge_requests/{iid}",
            "state": "opened",
            "title": title,
            "description": data.get("description"),
            "draft": title.startswith(("Draft:", "[Draft]", "(Draft)")),
            "source_branch": source,
            "target_branch": target,
            "sha": hashlib.sha1(source.encode()).hexdigest(),
            "labels": labels,
            "reviewers": [{"id": r} for r in data.get("reviewer_ids", [])],
        }
        self.pulls.append(mr)
        return 201, {}, mr

    def _update(self, iid: int, data: dict[str, Any]) -> Answer:
        mr = next((m for m in self.pulls if m["iid"] == iid), None)
        if mr is None:
            return 404, {}, {"message": "404 Not found"}
        mr["labels"] += [n for n in str(data.get("add_labels", "")).split(",") if n and n not in mr["labels"]]
        return 200, {}, mr


@dataclass
class FakeGitea(FakeHost):
    labels: list[dict[str, Any]] = field(default_factory=list)

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"token {self.token}"

    def unauthorized(self) -> Answer:
        return (
            401,
            {},
            {"message": "user does not exist [uid: 0, name: ]", "url": "https://gitea.example/api/swagger"},
        )

    def route(self, method: str, target: str, data: dict[str, Any]) -> Answer:
        parts = urlsplit(target)
        prefix = f"/api/v1/repos/{self.owner}/{self.repo}/"
        if not parts.path.startswith(prefix):
            return 404, {}, {"message": "The target couldn't be found."}
        rest = parts.path[len(prefix) :].strip("/").split("/")
        query = parse_qs(parts.query)
        if rest == ["pulls"] and method == "GET":
            return self._list(query)
        if rest == ["pulls"] and method == "POST":
            return self._create(data)
        if len(rest) == 3 and rest[0] == "pulls" and rest[2] == "requested_reviewers" and method == "POST":
            pull = next((p for p in self.pulls if str(p["number"]) == rest[1]), None)
            names = [str(n) for n in data.get("reviewers", [])]
            refused = self.request_review(pull, names)
            reviews = [
                {"id": 900 + i, "user": {"login": n}, "state": "REQUEST_REVIEW"} for i, n in enumerate(names)
            ]
            return refused or (201, {}, reviews)
        if rest == ["labels"] and method == "GET":
            return 200, {}, self.labels
        if rest == ["labels"] and method == "POST":
            label = {"id": 100 + len(self.labels), "name": data["name"], "color": data.get("color", "")}
            self.labels.append(label)
            return 201, {}, label
        if len(rest) == 3 and rest[0] == "issues" and rest[2] == "labels" and method == "POST":
            return self._label(int(rest[1]), data)
        return 404, {}, {"message": "The target couldn't be found."}

    def review_refusal(self, names: list[str]) -> str | None:
        """Gitea's ErrNotValidReviewRequest texts (422)."""
        if self.author in names:
            return "poster of pr can't be reviewer [user_id: 1, repo_id: 1]"
        if any(n in self.rejected_reviewers for n in names):
            return "reviewer can't read [user_id: 2, repo_id: 1]"
        return None

    def _list(self, query: dict[str, list[str]]) -> Answer:
        state = query.get("state", ["open"])[0]
        pulls = [p for p in self.pulls if state == "all" or p["state"] == state]
        return _page(pulls, query, self.url, "limit")

    def _create(self, data: dict[str, Any]) -> Answer:
        head, base = str(data.get("head", "")), str(data.get("base", ""))
        if not data.get("title") or not head or not base:
            return 422, {}, {"message": "[Title]: Required", "url": "https://gitea.example/api/swagger"}
        existing = next(
            (
                p
                for p in self.pulls
                if p["state"] == "open" and (p["head"]["ref"], p["base"]["ref"]) == (head, base)
            ),
            None,
        )
        if existing is not None:
            number = existing["number"]
            message = (
                f"pull request already exists for these targets [id: {number}, issue_id: {number}, "
                f"head_repo_id: 1, base_repo_id: 1, head_branch: {head}, base_branch: {base}]"
            )
            return 409, {}, {"message": message, "url": "https://gitea.example/api/swagger"}
        number = len(self.pulls) + 1
        pull = {
            "id": 500 + number,
            "number": number,
            "html_url": f"https://gitea.example/{self.owner}/{self.repo}/pulls/{number}",
            "state": "open",
            "title": data["title"],
            "body": data.get("body"),
            "head": {"ref": head, "label": head, "sha": hashlib.sha1(head.encode()).hexdigest()},
            "base": {"ref": base, "label": base},
            "labels": [],
        }
        self.pulls.append(pull)
        return 201, {}, pull

    def _label(self, number: int, data: dict[str, Any]) -> Answer:
        pull = next((p for p in self.pulls if p["number"] == number), None)
        by_id = {label["id"]: label for label in self.labels}
        if pull is None or any(i not in by_id for i in data.get("labels", [])):
            return 404, {}, {"message": "The target couldn't be found."}
        have = {label["id"] for label in pull["labels"]}
        pull["labels"] += [by_id[i] for i in data.get("labels", []) if i not in have]
        return 200, {}, pull["labels"]


def _handler(fake: FakeHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = fake.handle(self.command, self.path, headers, body)
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def serve_github(token: str, **options: Any) -> Iterator[FakeGitHub]:
    with _serve(FakeGitHub(token=token, **options)) as fake:
        yield fake


@contextmanager
def serve_gitlab(token: str, **options: Any) -> Iterator[FakeGitLab]:
    with _serve(FakeGitLab(token=token, **options)) as fake:
        yield fake


@contextmanager
def serve_gitea(token: str, **options: Any) -> Iterator[FakeGitea]:
    with _serve(FakeGitea(token=token, **options)) as fake:
        yield fake


HostT = TypeVar("HostT", bound=FakeHost)


@contextmanager
def _serve(fake: HostT) -> Iterator[HostT]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

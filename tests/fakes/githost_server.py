"""Our own GitHub REST subset on 127.0.0.1, faithful to what open_pr relies on.

Implements `GET/POST /repos/{o}/{r}/pulls` (head/base/state filters, 422 for a duplicate with GitHub's
real body), `POST /repos/{o}/{r}/issues/{n}/labels`, 401 for a wrong token, and injectable faults for the
next N requests. Runs in a background thread so async clients on the test's event loop can call it.
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
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
Fault = Literal["secondary_rate_limit", "primary_rate_limit", "server_error", "stale_list"]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class FakeGitHub:
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

    def inject(self, fault: Fault, times: int = 1) -> None:
        """The next `times` requests (of the matching kind, for stale_list) get this fault."""
        with self.lock:
            self.faults.extend([fault] * times)

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: str
    ) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests.append(Recorded(method, target, headers, body))
            if headers.get("authorization") not in (f"Bearer {self.token}", f"token {self.token}"):
                return (
                    401,
                    {},
                    {
                        "message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/rest",
                        "status": "401",
                    },
                )
            fault = self._take_fault(method, target)
            if fault is not None:
                return fault
            return self._route(method, target, json.loads(body) if body else {})

    def _take_fault(self, method: str, target: str) -> tuple[int, dict[str, str], Any] | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault == "stale_list":
            if method != "GET" or "/pulls" not in target:
                return None
            self.faults.pop(0)
            return 200, {}, []
        self.faults.pop(0)
        if fault == "secondary_rate_limit":
            return (
                429,
                {"Retry-After": str(self.retry_after)},
                {"message": SECONDARY_LIMIT_MESSAGE},
            )
        if fault == "primary_rate_limit":
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
        return 500, {}, {"message": "Server Error"}

    def _route(self, method: str, target: str, data: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        prefix = f"/repos/{self.owner}/{self.repo}"
        if not parts.path.startswith(prefix + "/"):
            return 404, {}, {"message": "Not Found"}
        rest = parts.path[len(prefix) :].rstrip("/").split("/")[1:]
        if rest == ["pulls"] and method == "GET":
            return 200, {}, self._list(parse_qs(parts.query))
        if rest == ["pulls"] and method == "POST":
            return self._create(data)
        if len(rest) == 3 and rest[0] == "issues" and rest[2] == "labels" and method == "POST":
            return self._label(int(rest[1]), data)
        return 404, {}, {"message": "Not Found"}

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

    def _create(self, data: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
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

    def _label(self, number: int, data: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        pull = next((p for p in self.pulls if p["number"] == number), None)
        if pull is None:
            return 404, {}, {"message": "Not Found"}
        names = [label["name"] for label in pull["labels"]]
        names += [n for n in data.get("labels", []) if n not in names]
        pull["labels"] = [{"name": n} for n in names]
        return 200, {}, pull["labels"]


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
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

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@contextmanager
def serve_github(token: str, **options: Any) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(token=token, **options)
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

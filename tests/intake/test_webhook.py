"""The webhook over real HTTP (uvicorn + Starlette on a port): GitHub, GitLab and Gitea deliveries with
their real signatures, forged ones, replays, Redeliver after a failure, limits, routes, proxies, logs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from temporalio.client import Client

from activities.settings import Settings
from clients.intake import workflow_exists
from clients.sources import Fetched, TicketSource, open_source
from clients.webhook import (
    MAX_BODY_BYTES,
    DeliveryLog,
    RateLimiter,
    Reply,
    WebhookReceiver,
    client_address,
    create_app,
    parse_networks,
    serve_webhook,
    server_config,
)
from workers.logging_setup import setup_logging

SECRET = b"webhook-secret-for-tests"
SOURCES = [
    "github:acme/widgets?repo=calc",
    "gitlab:acme/tools/widgets?repo=calc",
    "gitea:acme/widgets?repo=calc&api=https://gitea.example/api/v1",
]


class Started:
    """The start callable: records batches; `fail` makes the next calls fail as Temporal being down."""

    def __init__(self) -> None:
        self.batches: list[Fetched] = []
        self.fail = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, source: TicketSource, fetched: Fetched) -> Reply:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("Temporal is down")
        self.batches.append(fetched)
        return 200, f"started {fetched.tickets[0].id}"


# ------------------------------------------------------------------------------- events, signed


def github_event(
    action: str = "labeled", labels: tuple[str, ...] = ("ticketflow",), added: str = "ticketflow"
) -> bytes:
    payload: dict[str, Any] = {
        "action": action,
        "issue": {
            "number": 7,
            "title": "Add a power function",
            "body": "calc needs pow.",
            "labels": [{"name": n} for n in labels],
        },
        "label": {"name": added},
        "repository": {"full_name": "Acme/Widgets"},
    }
    return json.dumps(payload).encode()


def gitlab_event(
    action: str = "update", before: tuple[str, ...] = (), after: tuple[str, ...] = ("ticketflow",)
) -> bytes:
    payload = {
        "object_kind": "issue",
        "event_type": "issue",
        "project": {"path_with_namespace": "acme/tools/widgets"},
        "object_attributes": {
            "iid": 5,
            "title": "Add a log function",
            "description": "calc needs log.",
            "action": action,
        },
        "labels": [{"title": name} for name in after],
        "changes": {
            "labels": {"previous": [{"title": n} for n in before], "current": [{"title": n} for n in after]}
        },
    }
    return json.dumps(payload).encode()


def gitea_event(action: str = "label_updated", labels: tuple[str, ...] = ("ticketflow",)) -> bytes:
    payload = {
        "action": action,
        "number": 9,
        "issue": {
            "number": 9,
            "title": "Add a sqrt function",
            "body": "calc needs sqrt.",
            "labels": [{"name": n} for n in labels],
        },
        "repository": {"full_name": "acme/widgets"},
    }
    return json.dumps(payload).encode()


def github_headers(
    body: bytes, delivery: str = "d-1", secret: bytes = SECRET, kind: str = "issues"
) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery, "X-GitHub-Event": kind}


def gitlab_headers(body: bytes, delivery: str = "g-1", secret: bytes = SECRET) -> dict[str, str]:
    return {
        "X-Gitlab-Token": secret.decode(),
        "X-Gitlab-Event-UUID": delivery,
        "X-Gitlab-Event": "Issue Hook",
    }


def gitea_headers(body: bytes, delivery: str = "t-1", secret: bytes = SECRET) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Gitea-Signature": digest, "X-Gitea-Delivery": delivery, "X-Gitea-Event": "issues"}


SIGNED: dict[str, tuple[Callable[[], bytes], Callable[..., dict[str, str]]]] = {
    "github": (github_event, github_headers),
    "gitlab": (gitlab_event, gitlab_headers),
    "gitea": (gitea_event, gitea_headers),
}


# --------------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def started() -> Started:
    return Started()


def receiver(tmp_path: Path, started: Started, limiter: RateLimiter | None = None) -> WebhookReceiver:
    settings = Settings(state_dir=tmp_path / "state")
    sources = [open_source(text, settings) for text in SOURCES]
    return WebhookReceiver(SECRET, sources, started, DeliveryLog(tmp_path / "deliveries.log"), limiter)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))  # serve_webhook's own settings
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def webhook(tmp_path: Path, started: Started, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    limiter = kwargs.pop("limiter", None)
    async with serving(create_app(receiver(tmp_path, started, limiter), **kwargs)) as http:
        yield http


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("host", ["github", "gitlab", "gitea"])
async def test_a_signed_issue_event_starts_its_ticket(tmp_path: Path, started: Started, host: str) -> None:
    event, sign = SIGNED[host]
    body = event()
    async with webhook(tmp_path, started) as http:
        reply = await http.post(f"/{host}", content=body, headers=sign(body))
    expected = {"github": "acme-widgets-7", "gitlab": "acme-tools-widgets-5", "gitea": "acme-widgets-9"}[host]
    assert (reply.status_code, reply.json()) == (200, {"message": f"started {expected}"})
    (ticket,) = started.batches[0].tickets
    assert ticket.id == expected and ticket.repo == "calc"
    assert (
        ticket.source and ticket.source.startswith(f"{host}:") and ticket.source.endswith(f"#{expected[-1]}")
    )


@pytest.mark.parametrize("host", ["github", "gitlab", "gitea"])
@pytest.mark.parametrize("forgery", ["wrong secret", "missing", "tampered body", "other host's route"])
async def test_forged_deliveries_are_refused(
    tmp_path: Path, started: Started, host: str, forgery: str
) -> None:
    if (host, forgery) == ("gitlab", "tampered body"):
        pytest.skip("GitLab's X-Gitlab-Token is the secret itself, not a signature of the body")
    event, sign = SIGNED[host]
    body = event()
    headers = sign(body, secret=b"guessed-secret") if forgery == "wrong secret" else sign(body)
    if forgery == "missing":
        headers = {k: v for k, v in headers.items() if "Signature" not in k and "Token" not in k}
    path = f"/{host}"
    if forgery == "tampered body":
        body = body.replace(b"calc needs", b"evil needs")
    if forgery == "other host's route":
        path = "/gitea" if host != "gitea" else "/github"
    async with webhook(tmp_path, started) as http:
        reply = await http.post(path, content=body, headers=headers)
    assert reply.status_code == 401 and reply.json() == {"message": "bad signature"}
    assert started.batches == []


async def test_replays_are_refused_even_after_a_restart(tmp_path: Path, started: Started) -> None:
    body = github_event()
    async with webhook(tmp_path, started) as http:
        first = await http.post("/github", content=body, headers=github_headers(body))
        replay = await http.post("/github", content=body, headers=github_headers(body))
    async with webhook(tmp_path, started) as http:
        restarted = await http.post("/github", content=body, headers=github_headers(body))
    assert first.status_code == 200
    assert (replay.status_code, replay.json()["message"]) == (409, "delivery d-1 was already received")
    assert restarted.status_code == 409 and len(started.batches) == 1


async def test_redeliver_after_a_failure_starts_the_ticket(tmp_path: Path, started: Started) -> None:
    """GitHub's "Redeliver" resends the same delivery id: one that failed (Temporal down) is not
    recorded, so the retry goes through; once handled it is."""
    started.fail = 1
    body = github_event()
    async with webhook(tmp_path, started) as http:
        failed = await http.post("/github", content=body, headers=github_headers(body))
        assert not (tmp_path / "deliveries.log").exists()
        redelivered = await http.post("/github", content=body, headers=github_headers(body))
        again = await http.post("/github", content=body, headers=github_headers(body))
    assert failed.status_code == 500 and redelivered.status_code == 200 and again.status_code == 409
    assert (tmp_path / "deliveries.log").read_text().split() == ["github:d-1"]


async def test_a_delivery_in_flight_is_not_handled_twice(tmp_path: Path, started: Started) -> None:
    started.gate = asyncio.Event()
    body = github_event()
    async with webhook(tmp_path, started) as http:
        first = asyncio.create_task(http.post("/github", content=body, headers=github_headers(body)))
        await asyncio.sleep(0.3)
        second = await http.post("/github", content=body, headers=github_headers(body))
        started.gate.set()
        assert (await first).status_code == 200
    assert (second.status_code, second.json()["message"]) == (409, "delivery d-1 is being handled")
    assert len(started.batches) == 1


async def test_events_that_start_nothing(tmp_path: Path, started: Started) -> None:
    cases = [
        ("/github", github_event(action="closed"), "issues"),
        ("/github", github_event(labels=("bug",), added="bug"), "issues"),
        ("/github", github_event(labels=("ticketflow", "bug"), added="bug"), "issues"),
        ("/github", github_event(), "push"),
        ("/github", github_event().replace(b"Acme/Widgets", b"other/repo"), "issues"),
    ]
    async with webhook(tmp_path, started) as http:
        replies = [
            await http.post(path, content=b, headers=github_headers(b, f"n-{i}", kind=k))
            for i, (path, b, k) in enumerate(cases)
        ]
        gitlab_unlabelled = gitlab_event(before=("ticketflow",), after=("ticketflow", "bug"))
        replies.append(
            await http.post("/gitlab", content=gitlab_unlabelled, headers=gitlab_headers(gitlab_unlabelled))
        )
        ping = b"{}"
        pong = await http.post("/github", content=ping, headers=github_headers(ping, "p", kind="ping"))
        junk = b"not json"
        bad = await http.post("/github", content=junk, headers=github_headers(junk, "j"))
    assert [r.status_code for r in replies] == [202] * 6 and started.batches == []
    assert pong.json() == {"message": "pong"} and bad.status_code == 400


async def test_routes_are_exact_with_true_status_lines(tmp_path: Path, started: Started) -> None:
    async with webhook(tmp_path, started) as http:
        health = await http.get("/healthz")
        port = http.base_url.port
        raw = {}
        for request in (
            b"GET /github HTTP/1.1",
            b"POST / HTTP/1.1",
            b"POST /github/x HTTP/1.1",
            b"POST /healthz HTTP/1.1",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request + b"\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            raw[request.split(b" ")[1].decode()] = (await reader.read()).split(b"\r\n", 1)[0]
            writer.close()
    assert health.status_code == 200 and health.json() == {"message": "ok"}
    assert raw == {
        "/github": b"HTTP/1.1 405 Method Not Allowed",
        "/": b"HTTP/1.1 404 Not Found",
        "/github/x": b"HTTP/1.1 404 Not Found",
        "/healthz": b"HTTP/1.1 405 Method Not Allowed",
    }


async def test_size_limits(tmp_path: Path, started: Started) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    async with webhook(tmp_path, started) as http:
        declared = await http.post("/github", content=b"x" * (MAX_BODY_BYTES + 1))
        streamed = await http.post("/github", content=chunks())
        headers = await http.post("/github", content=b"{}", headers={"X-Big": "a" * 20_000})
    assert declared.status_code == 413 and streamed.status_code == 413 and headers.status_code == 431
    assert started.batches == []


async def test_rate_limit_counts_the_client_behind_trusted_proxies(tmp_path: Path, started: Started) -> None:
    now = [0.0]
    ping = b"{}"

    def post(http: httpx.AsyncClient, delivery: str, forwarded: str) -> Any:
        headers = {**github_headers(ping, delivery, kind="ping"), "X-Forwarded-For": forwarded}
        return http.post("/github", content=ping, headers=headers)

    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    async with webhook(
        tmp_path, started, limiter=limiter, trusted_proxies=parse_networks(["127.0.0.0/8"])
    ) as http:
        a = [(await post(http, f"a{i}", "203.0.113.7")).status_code for i in range(3)]
        b = (await post(http, "b", "198.51.100.2, 203.0.113.9")).status_code  # spoofed left part ignored
        spoof = (await post(http, "c", "203.0.113.7, 203.0.113.9")).status_code
    assert a == [200, 200, 429] and b == 200 and spoof == 200

    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    async with webhook(tmp_path / "untrusted", started, limiter=limiter) as http:
        untrusted = [(await post(http, f"u{i}", f"203.0.113.{i}")).status_code for i in range(3)]
    assert untrusted == [200, 200, 429]  # without trusted proxies X-Forwarded-For means nothing


def test_client_address() -> None:
    trusted = parse_networks(["10.0.0.0/8", "192.0.2.1"])
    assert client_address("10.1.2.3", "203.0.113.5", trusted) == "203.0.113.5"
    assert client_address("10.1.2.3", "1.1.1.1, 203.0.113.5, 10.9.9.9", trusted) == "203.0.113.5"
    assert client_address("198.51.100.1", "203.0.113.5", trusted) == "198.51.100.1"  # peer not trusted
    assert client_address("192.0.2.1", "10.0.0.1, 10.0.0.2", trusted) == "10.0.0.1"  # all trusted
    assert client_address("10.1.2.3", "garbage", trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", None, trusted) == "10.1.2.3"
    with pytest.raises(Exception, match="not an IP address"):
        parse_networks(["proxy.example"])


async def test_logs_are_json_lines_with_secrets_masked(tmp_path: Path, started: Started) -> None:
    out = io.StringIO()
    handler = setup_logging("json", "INFO", stream=out, secrets=[SECRET.decode()])
    try:
        body = github_event().replace(b"Acme/Widgets", SECRET + b"/repo")
        async with webhook(tmp_path, started) as http:
            reply = await http.post("/github", content=body, headers=github_headers(body))
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (line,) = [entry for entry in lines if entry["logger"] == "ticketflow.webhook"]
    assert reply.status_code == 202
    assert line["msg"].startswith("POST /github 202 from 127.0.0.1 delivery d-1 event issues")
    assert SECRET.decode() not in out.getvalue() and "***/repo" in line["msg"]


def test_delivery_log_is_bounded_in_memory_and_on_disk(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path / "d.log", limit=5)
    for n in range(23):
        log.add(f"id-{n}")
    assert "id-22" in log and "id-17" not in log and "id-18" in log
    assert len((tmp_path / "d.log").read_text().split()) <= 10
    reloaded = DeliveryLog(tmp_path / "d.log", limit=5)
    assert "id-22" in reloaded and "id-17" not in reloaded


def test_a_receiver_needs_a_secret(tmp_path: Path, started: Started) -> None:
    with pytest.raises(Exception, match="needs a secret"):
        WebhookReceiver(b"", [], started, DeliveryLog(tmp_path / "d.log"))


async def test_serve_webhook_starts_a_real_ticket(client: Client, settings: Settings) -> None:
    port = free_port()
    number = int(uuid.uuid4().int % 10**8)
    configured = settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET.decode()), "sources": ["github:acme/widgets?repo=calc"]}
    )
    ready = asyncio.Event()
    server = asyncio.create_task(serve_webhook(configured, "127.0.0.1", port, started=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        body = github_event().replace(b'"number": 7', f'"number": {number}'.encode())
        headers = github_headers(body, delivery=f"real-{number}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            reply = await http.post("/github", content=body, headers=headers)
            again = await http.post("/github", content=body, headers=headers)
            health = await http.get("/healthz")
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    assert (reply.status_code, reply.json()) == (200, {"message": f"started acme-widgets-{number}"})
    assert again.status_code == 409 and health.status_code == 200
    assert await workflow_exists(client, f"acme-widgets-{number}")
    assert (configured.state_dir / "webhook" / "deliveries.log").read_text().split() == [
        f"github:real-{number}"
    ]


async def test_serve_webhook_answers_503_when_the_ticket_cannot_start(
    client: Client, settings: Settings
) -> None:
    """A ticket intake could not start (here: its repository is unknown) is a 503 and the delivery
    stays unrecorded, so the host's Redeliver can try again once the cause is fixed."""
    port = free_port()
    number = int(uuid.uuid4().int % 10**8)
    broken = settings.model_copy(
        update={
            "webhook_secret": SecretStr(SECRET.decode()),
            "sources": ["github:acme/widgets?repo=nosuchrepo"],
        }
    )
    ready = asyncio.Event()
    server = asyncio.create_task(serve_webhook(broken, "127.0.0.1", port, started=ready))
    body = github_event().replace(b'"number": 7', f'"number": {number}'.encode())
    headers = github_headers(body, delivery=f"redeliver-{number}")
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            failed = await http.post("/github", content=body, headers=headers)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    log = broken.state_dir / "webhook" / "deliveries.log"
    assert failed.status_code == 503 and "nosuchrepo" in failed.json()["message"]
    assert not log.exists() or log.read_text() == ""

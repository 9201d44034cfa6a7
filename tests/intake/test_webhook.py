"""The GitHub webhook receiver: valid, forged and replayed deliveries, limits, and a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from activities.settings import Settings
from clients.intake import workflow_exists
from clients.sources import Fetched
from clients.sources.base import parse_spec
from clients.sources.github_issues import GitHubIssuesSource
from clients.webhook import (
    MAX_BODY_BYTES,
    DeliveryLog,
    RateLimiter,
    WebhookReceiver,
    serve_webhook,
    signature_of,
    start_server,
)

SECRET = b"webhook-secret-for-tests"


class Started:
    def __init__(self) -> None:
        self.batches: list[Fetched] = []

    async def __call__(self, source: GitHubIssuesSource, fetched: Fetched) -> str:
        self.batches.append(fetched)
        return f"started {fetched.tickets[0].id}"


def event(
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


def headers(
    body: bytes, delivery: str = "d-1", secret: bytes = SECRET, kind: str = "issues"
) -> dict[str, str]:
    return {
        "x-hub-signature-256": signature_of(secret, body),
        "x-github-delivery": delivery,
        "x-github-event": kind,
    }


@pytest.fixture
def started() -> Started:
    return Started()


def receiver(tmp_path: Path, started: Started, limiter: RateLimiter | None = None) -> WebhookReceiver:
    source = GitHubIssuesSource(parse_spec("github:acme/widgets?repo=calc"), SecretStr("t"))
    return WebhookReceiver(SECRET, [source], started, DeliveryLog(tmp_path / "deliveries.log"), limiter)


async def test_valid_labeled_event_starts_the_ticket(tmp_path: Path, started: Started) -> None:
    body = event()
    status, message = await receiver(tmp_path, started).handle("1.2.3.4", "POST", headers(body), body)

    assert (status, message) == (200, "started acme-widgets-7")
    (ticket,) = started.batches[0].tickets
    assert (ticket.title, ticket.repo, ticket.source) == (
        "Add a power function",
        "calc",
        "github:acme/widgets?repo=calc#7",
    )


@pytest.mark.parametrize(
    "forge",
    [
        lambda h, b: {**h, "x-hub-signature-256": signature_of(b"guessed-secret", b)},
        lambda h, b: {**h, "x-hub-signature-256": ""},
        lambda h, b: {k: v for k, v in h.items() if k != "x-hub-signature-256"},
        lambda h, b: {**h, "x-hub-signature-256": h["x-hub-signature-256"].replace("sha256=", "sha1=")},
    ],
)
async def test_forged_signatures_are_refused(tmp_path: Path, started: Started, forge: Any) -> None:
    body = event()
    status, _ = await receiver(tmp_path, started).handle("1.2.3.4", "POST", forge(headers(body), body), body)
    assert status == 401 and started.batches == []


async def test_tampered_body_is_refused(tmp_path: Path, started: Started) -> None:
    body = event()
    tampered = body.replace(b"power", b"evil!")
    status, _ = await receiver(tmp_path, started).handle("1.2.3.4", "POST", headers(body), tampered)
    assert status == 401 and started.batches == []


async def test_replayed_delivery_is_refused_even_after_a_restart(tmp_path: Path, started: Started) -> None:
    body = event()
    first = receiver(tmp_path, started)
    assert (await first.handle("1.2.3.4", "POST", headers(body), body))[0] == 200
    replay = await first.handle("1.2.3.4", "POST", headers(body), body)
    restarted = await receiver(tmp_path, started).handle("1.2.3.4", "POST", headers(body), body)

    assert replay == (409, "delivery d-1 was already received") and restarted[0] == 409
    assert len(started.batches) == 1


def test_delivery_log_is_bounded_in_memory_and_on_disk(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path / "d.log", limit=5)
    for n in range(23):
        log.add(f"id-{n}")
    assert "id-22" in log and "id-17" not in log and "id-18" in log
    assert len((tmp_path / "d.log").read_text().split()) <= 10
    reloaded = DeliveryLog(tmp_path / "d.log", limit=5)
    assert "id-22" in reloaded and "id-17" not in reloaded


async def test_events_that_start_nothing(tmp_path: Path, started: Started) -> None:
    r = receiver(tmp_path, started)
    cases = [
        (event(action="closed"), "issues"),
        (event(labels=("bug",), added="bug"), "issues"),
        (event(labels=("ticketflow", "bug"), added="bug"), "issues"),
        (event(), "push"),
        (event().replace(b"Acme/Widgets", b"other/repo"), "issues"),
    ]
    replies = [await r.handle("h", "POST", headers(b, f"n-{i}", kind=k), b) for i, (b, k) in enumerate(cases)]
    assert [s for s, _ in replies] == [202] * 5 and started.batches == []
    ping = b"{}"
    assert await r.handle("h", "POST", headers(ping, "p", kind="ping"), ping) == (200, "pong")
    junk = b"not json"
    assert (await r.handle("h", "POST", headers(junk, "j"), junk))[0] == 400


async def test_per_client_rate_limit(tmp_path: Path, started: Started) -> None:
    now = [0.0]
    r = receiver(tmp_path, started, RateLimiter(per_minute=3, clock=lambda: now[0]))
    body = b"{}"
    statuses = [(await r.handle("a", "POST", headers(body, f"x{i}", kind="ping"), body))[0] for i in range(4)]
    other = (await r.handle("b", "POST", headers(body, "y", kind="ping"), body))[0]
    now[0] = 20.0  # one token back
    later = (await r.handle("a", "POST", headers(body, "z", kind="ping"), body))[0]
    assert statuses == [200, 200, 200, 429] and other == 200 and later == 200


def test_a_receiver_needs_a_secret(tmp_path: Path, started: Started) -> None:
    with pytest.raises(Exception, match="needs a secret"):
        WebhookReceiver(b"", [], started, DeliveryLog(tmp_path / "d.log"))


async def _post(port: int, head: str, body: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    return status, json.loads(raw.split(b"\r\n\r\n", 1)[1] or b"{}")


async def test_over_a_real_socket(tmp_path: Path, started: Started) -> None:
    server = await start_server(receiver(tmp_path, started), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        body = event()
        sig = headers(body)
        head = (
            f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: {sig['x-hub-signature-256']}\r\nX-GitHub-Delivery: sock-1\r\n"
            f"X-GitHub-Event: issues\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        ok = await _post(port, head, body)
        too_big = await _post(port, f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n", b"")
        chunked = await _post(port, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n")
        huge_headers = await _post(port, "POST / HTTP/1.1\r\nX-Big: " + "a" * 70_000 + "\r\n\r\n", b"")
    assert ok == (200, {"message": "started acme-widgets-7"})
    assert too_big[0] == 413 and chunked[0] == 411 and huge_headers[0] == 431


async def test_serve_webhook_starts_a_real_ticket(client: Client, settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    number = int(uuid.uuid4().int % 10**8)
    configured = settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET.decode()), "sources": ["github:acme/widgets?repo=calc"]}
    )
    server = asyncio.create_task(serve_webhook(configured, "127.0.0.1", port))
    try:
        body = event().replace(b'"number": 7', f'"number": {number}'.encode())
        sig = headers(body, delivery=f"real-{number}")
        head = (
            f"POST / HTTP/1.1\r\nX-Hub-Signature-256: {sig['x-hub-signature-256']}\r\n"
            f"X-GitHub-Delivery: {sig['x-github-delivery']}\r\nX-GitHub-Event: issues\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        for _ in range(100):  # the server is up once it accepts a connection
            try:
                reply = await _post(port, head, body)
                break
            except OSError:
                await asyncio.sleep(0.05)
        again = await _post(port, head, body)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    assert reply == (200, {"message": f"started acme-widgets-{number}"})
    assert again[0] == 409 and await workflow_exists(client, f"acme-widgets-{number}")
    assert (configured.state_dir / "webhook" / "deliveries.log").read_text().split() == [f"real-{number}"]

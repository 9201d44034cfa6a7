"""Webhook receiver for GitHub issue events: a labelled (or opened-with-label) issue starts a ticket.

Plain asyncio streams, no framework: one small POST endpoint. Every request passes, in order, a size
limit, a per-client rate limit, the HMAC-SHA256 signature (`X-Hub-Signature-256`, compared in constant
time) and a replay check on `X-GitHub-Delivery` (a bounded set of recent ids, persisted under the state
dir, so a restart does not reopen the window). Only then is the JSON read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from activities.settings import Settings
from clients.sources import Fetched, SourceError, open_source
from clients.sources.github_issues import GitHubIssuesSource
from clients.ticket_files import explain

log = logging.getLogger("ticketflow.webhook")

MAX_BODY_BYTES = 1024 * 1024  # issue events are a few KB; GitHub's own cap is 25 MB
MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 10.0
REMEMBERED_DELIVERIES = 10_000
RATE_PER_MINUTE = 60
TRACKED_CLIENTS = 10_000
TRIGGER_ACTIONS = ("opened", "labeled")

Reply = tuple[int, str]
StartBatch = Callable[[GitHubIssuesSource, Fetched], Awaitable[str]]


class DeliveryLog:
    """Recently seen delivery ids: bounded in memory, appended to a file, compacted when it doubles."""

    def __init__(self, path: Path, limit: int = REMEMBERED_DELIVERIES) -> None:
        self.path, self.limit = path, limit
        self._seen: OrderedDict[str, None] = OrderedDict()
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text(encoding="utf-8").split() if path.is_file() else []
        for delivery in lines[-limit:]:
            self._seen[delivery] = None
        self._lines_on_disk = len(lines)

    def __contains__(self, delivery: str) -> bool:
        return delivery in self._seen

    def add(self, delivery: str) -> None:
        self._seen[delivery] = None
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        if self._lines_on_disk >= 2 * self.limit:
            temp = self.path.with_suffix(".tmp")
            temp.write_text("".join(f"{d}\n" for d in self._seen), encoding="utf-8")
            temp.replace(self.path)
            self._lines_on_disk = len(self._seen)
        else:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(f"{delivery}\n")
            self._lines_on_disk += 1


class RateLimiter:
    """A token bucket per client address; the least recently seen clients are forgotten first."""

    def __init__(
        self, per_minute: int = RATE_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity, self.rate, self.clock = float(per_minute), per_minute / 60.0, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return allowed


def signature_of(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    def __init__(
        self,
        secret: bytes,
        sources: list[GitHubIssuesSource],
        start: StartBatch,
        deliveries: DeliveryLog,
        limiter: RateLimiter | None = None,
    ) -> None:
        if not secret:
            raise SourceError("the webhook needs a secret: set webhook_secret (TICKETFLOW_WEBHOOK_SECRET)")
        self.secret, self.start, self.deliveries = secret, start, deliveries
        self.sources = {s.owner_repo.lower(): s for s in sources}
        self.limiter = limiter or RateLimiter()

    async def handle(self, client: str, method: str, headers: dict[str, str], body: bytes) -> Reply:
        if method != "POST":
            return 405, "only POST"
        if not self.limiter.allow(client):
            return 429, "too many requests"
        given = headers.get("x-hub-signature-256", "")
        if not hmac.compare_digest(given.encode(), signature_of(self.secret, body).encode()):
            return 401, "bad signature"
        delivery = headers.get("x-github-delivery", "").strip()
        if not delivery or len(delivery) > 100 or any(c.isspace() for c in delivery):
            return 400, "missing X-GitHub-Delivery"
        if delivery in self.deliveries:
            return 409, f"delivery {delivery} was already received"
        self.deliveries.add(delivery)
        event = headers.get("x-github-event", "")
        if event == "ping":
            return 200, "pong"
        if event != "issues":
            return 202, f"ignored {event or 'unnamed'} event"
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return 400, "body is not JSON"
        return await self._issue_event(payload)

    async def _issue_event(self, payload: Any) -> Reply:
        if not isinstance(payload, dict) or not isinstance(payload.get("issue"), dict):
            return 400, "not an issues event payload"
        repo = str((payload.get("repository") or {}).get("full_name", "")).lower()
        source = self.sources.get(repo)
        if source is None:
            return 202, f"no source configured for {repo or 'this repository'}"
        issue = payload["issue"]
        labels = {str(label.get("name")) for label in issue.get("labels") or [] if isinstance(label, dict)}
        if payload.get("action") not in TRIGGER_ACTIONS or source.label not in labels:
            return 202, f"ignored: action {payload.get('action')!r} without label {source.label!r}"
        if payload.get("action") == "labeled" and (payload.get("label") or {}).get("name") != source.label:
            return 202, "ignored: another label was added"
        try:
            ticket = source.ticket_from_issue(issue)
        except (ValidationError, KeyError) as exc:
            reason = explain(exc) if isinstance(exc, ValidationError) else f"missing {exc}"
            return 422, f"issue #{issue.get('number')}: {reason}"
        return 200, await self.start(source, Fetched(tickets=[ticket]))


# ---------------------------------------------------------------------------------------- server


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, "headers too large") from None
    except asyncio.IncompleteReadError:
        raise _BadRequest(400, "incomplete request") from None
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _BadRequest(411, "send a Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise _BadRequest(413, f"body over {MAX_BODY_BYTES} bytes")
    return method, headers, await reader.readexactly(length)


def _response(status: int, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


def connection_handler(
    receiver: WebhookReceiver,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        try:
            method, headers, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            status, message = await receiver.handle(client, method, headers, body)
        except _BadRequest as exc:
            status, message = exc.status, str(exc)
        except (TimeoutError, asyncio.IncompleteReadError):
            status, message = 408, "request not received in time"
        except Exception:  # a failing start must not kill the server; GitHub retries on 5xx
            log.exception("webhook request failed")
            status, message = 500, "internal error"
        log.info("%s -> %s %s", client, status, message)
        try:
            writer.write(_response(status, message))
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        finally:
            writer.close()

    return serve


async def start_server(receiver: WebhookReceiver, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(connection_handler(receiver), host, port, limit=MAX_HEADER_BYTES)


def github_sources(settings: Settings) -> list[GitHubIssuesSource]:
    found = [open_source(text, settings) for text in settings.sources if text.startswith("github:")]
    sources = [s for s in found if isinstance(s, GitHubIssuesSource)]
    if not sources:
        raise SourceError("the webhook serves github: sources; list at least one under `sources`")
    return sources


async def serve_webhook(settings: Settings, host: str, port: int) -> None:
    from clients import intake
    from clients.connect import connect

    client = await connect(settings)

    async def start(source: GitHubIssuesSource, fetched: Fetched) -> str:
        report = await intake.run_intake(client, settings, source, fetched=fetched)
        parts = [
            *(f"started {t}" for t in report.started),
            *report.existing,
            *report.rejected,
            *report.errors,
        ]
        return "; ".join(parts) or "nothing to start"

    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""
    deliveries = DeliveryLog(settings.state_dir / "webhook" / "deliveries.log")
    receiver = WebhookReceiver(secret, github_sources(settings), start, deliveries)
    server = await start_server(receiver, host, port)
    log.info("webhook listening on http://%s:%s", host, port)
    async with server:
        await server.serve_forever()

"""Webhook receiver for issue events of GitHub, GitLab and Gitea: a labelled issue starts its ticket.

An ASGI app (Starlette) served by uvicorn. Routes, exactly: `POST /github`, `POST /gitlab`,
`POST /gitea` and `GET /healthz`; anything else is 404 (405 for a known path with another method).
Every event passes, in order:

1. size: a body over 1 MiB is 413 (Content-Length checked first, streamed bodies counted);
2. a per-client rate limit (429). The client is the connection's peer, unless that peer is one of
   `webhook_trusted_proxies`: then it is the last address of X-Forwarded-For that is not a trusted proxy;
3. the host's signature, in constant time (401): GitHub `X-Hub-Signature-256` (`sha256=` HMAC-SHA256 of
   the body), GitLab `X-Gitlab-Token` (the secret itself), Gitea `X-Gitea-Signature` (hex HMAC-SHA256);
4. replay: a delivery id (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`, `X-Gitea-Delivery`) already
   handled is 409, and one being handled right now too.

Only then is the JSON read. A delivery is recorded as handled once its ticket was started (or found
already started) or the event was answered for good (ignored, refused): a delivery that failed with a
5xx, e.g. while Temporal was down, is not recorded, so the host's "Redeliver" works. Handled ids (the
last 10,000) are kept in memory and in `<state_dir>/webhook/deliveries.log`, so a restart does not
reopen the window.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from clients.sources import Fetched, SourceError, TicketSource, open_source
from clients.ticket_files import explain
from workflows.contracts import Ticket

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from activities.settings import Settings

log = logging.getLogger("ticketflow.webhook")

MAX_BODY_BYTES = 1024 * 1024  # issue events are a few KB; GitHub's own cap is 25 MB
MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 10.0
REMEMBERED_DELIVERIES = 10_000
RATE_PER_MINUTE = 60
TRACKED_CLIENTS = 10_000
MAX_DELIVERY_ID = 100

Reply = tuple[int, str]
# Starts the tickets of one event; answers (status, message). A 5xx leaves the delivery unrecorded.
StartBatch = Callable[[TicketSource, Fetched], Awaitable[Reply]]


class DeliveryLog:
    """Handled delivery ids: bounded in memory, appended to a file, compacted when it doubles."""

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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """`webhook_trusted_proxies` entries: addresses or CIDR networks."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise SourceError(f"webhook_trusted_proxies: {entry!r} is not an IP address or network") from None
    return networks


def client_address(peer: str, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The address the rate limit counts: the peer, or behind trusted proxies the first untrusted
    address of X-Forwarded-For counted from the right (the entries left of it are the client's word)."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not trusted or not is_trusted(peer) or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy we trust wrote garbage: count the proxy
    return hops[0] if hops else peer


# ------------------------------------------------------------------------------------- git hosts


def signature_of(secret: bytes, body: bytes) -> str:
    """GitHub's X-Hub-Signature-256 value."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def gitea_signature_of(secret: bytes, body: bytes) -> str:
    """Gitea's (and Forgejo's) X-Gitea-Signature value: the bare hex digest."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Issue:
    """An issue event, the same for every host."""

    repo: str  # owner/name, or GitLab's group/project path, lower case
    action: str  # opened | labeled | other
    labels: frozenset[str]
    added_labels: frozenset[str]
    issue: dict[str, Any]  # the host's issue object, for its source's ticket_from_issue


class Host:
    """One git host's webhook dialect: signature, headers and the issue event's shape."""

    name = ""
    delivery_header = ""
    event_header = ""
    issue_events: tuple[str, ...] = ()
    ping_events: tuple[str, ...] = ()

    def verify(self, secret: bytes, headers: dict[str, str], body: bytes) -> bool:
        raise NotImplementedError

    def issue_event(self, payload: dict[str, Any]) -> Issue | None:
        raise NotImplementedError


def _names(labels: Any, key: str = "name") -> frozenset[str]:
    return frozenset(
        str(label.get(key)) for label in labels or [] if isinstance(label, dict) and label.get(key)
    )


class GitHubHook(Host):
    name = "github"
    delivery_header = "x-github-delivery"
    event_header = "x-github-event"
    issue_events: tuple[str, ...] = ("issues",)
    ping_events: tuple[str, ...] = ("ping",)

    def verify(self, secret: bytes, headers: dict[str, str], body: bytes) -> bool:
        given = headers.get("x-hub-signature-256", "")
        return hmac.compare_digest(given.encode(), signature_of(secret, body).encode())

    def issue_event(self, payload: dict[str, Any]) -> Issue | None:
        issue = payload.get("issue")
        if not isinstance(issue, dict):
            return None
        action = str(payload.get("action", ""))
        added = _names([payload.get("label")]) if action == "labeled" else frozenset()
        return Issue(
            repo=str((payload.get("repository") or {}).get("full_name", "")).lower(),
            action=action if action in ("opened", "labeled") else action or "unknown",
            labels=_names(issue.get("labels")),
            added_labels=added,
            issue=issue,
        )


class GiteaHook(GitHubHook):
    """Gitea and Forgejo: GitHub's payload shape, their own signature header and label actions."""

    name = "gitea"
    delivery_header = "x-gitea-delivery"
    event_header = "x-gitea-event"
    ping_events = ()

    def verify(self, secret: bytes, headers: dict[str, str], body: bytes) -> bool:
        given = headers.get("x-gitea-signature", "")
        return hmac.compare_digest(given.encode(), gitea_signature_of(secret, body).encode())

    def issue_event(self, payload: dict[str, Any]) -> Issue | None:
        event = super().issue_event(payload)
        if event is None:
            return None
        # Gitea reports any label change as `label_updated` with the issue's labels afterwards; whether
        # the intake label is new cannot be told, and starting an issue twice starts it once.
        if event.action == "label_updated":
            return Issue(event.repo, "labeled", event.labels, event.labels, event.issue)
        return event


class GitLabHook(Host):
    name = "gitlab"
    delivery_header = "x-gitlab-event-uuid"
    event_header = "x-gitlab-event"
    issue_events = ("Issue Hook",)

    def verify(self, secret: bytes, headers: dict[str, str], body: bytes) -> bool:
        return hmac.compare_digest(headers.get("x-gitlab-token", "").encode(), secret)

    def issue_event(self, payload: dict[str, Any]) -> Issue | None:
        attributes = payload.get("object_attributes")
        if payload.get("object_kind") != "issue" or not isinstance(attributes, dict):
            return None
        labels = _names(payload.get("labels"), "title")
        changes = (payload.get("changes") or {}).get("labels") or {}
        before = _names(changes.get("previous"), "title")
        added = _names(changes.get("current"), "title") - before
        action = {"open": "opened", "reopen": "opened"}.get(str(attributes.get("action")), "other")
        if action == "other" and added:
            action = "labeled"
        issue = {
            "number": attributes.get("iid"),
            "title": attributes.get("title"),
            "body": attributes.get("description"),
            "labels": [{"name": name} for name in sorted(labels)],
        }
        project = str((payload.get("project") or {}).get("path_with_namespace", "")).lower()
        return Issue(project, action, labels, added, issue)


HOSTS: dict[str, Host] = {hook.name: hook for hook in (GitHubHook(), GitLabHook(), GiteaHook())}


# -------------------------------------------------------------------------------------- receiver


class WebhookReceiver:
    """What to do with one verified request; the HTTP layer (create_app) is separate."""

    def __init__(
        self,
        secret: bytes,
        sources: list[Any],
        start: StartBatch,
        deliveries: DeliveryLog,
        limiter: RateLimiter | None = None,
    ) -> None:
        if not secret:
            raise SourceError("the webhook needs a secret: set webhook_secret (TICKETFLOW_WEBHOOK_SECRET)")
        self.secret, self.start, self.deliveries = secret, start, deliveries
        # (host, repository path) -> its issue source: github:, gitlab: and gitea: sources
        self.sources = {(s.spec.kind, s.owner_repo.lower()): s for s in sources}
        self.limiter = limiter or RateLimiter()
        self._in_flight: set[str] = set()

    async def handle(self, host_name: str, client: str, headers: dict[str, str], body: bytes) -> Reply:
        host = HOSTS[host_name]
        if not self.limiter.allow(client):
            return 429, "too many requests"
        if not host.verify(self.secret, headers, body):
            return 401, "bad signature"
        delivery = headers.get(host.delivery_header, "").strip()
        if not delivery or len(delivery) > MAX_DELIVERY_ID or any(c.isspace() for c in delivery):
            return 400, f"missing {host.delivery_header}"
        key = f"{host.name}:{delivery}"
        if key in self.deliveries or delivery in self.deliveries:
            return 409, f"delivery {delivery} was already received"
        if key in self._in_flight:
            return 409, f"delivery {delivery} is being handled"
        self._in_flight.add(key)
        try:
            status, message = await self._event(host, headers, body)
        finally:
            self._in_flight.discard(key)
        if status < 500:
            self.deliveries.add(key)
        return status, message

    async def _event(self, host: Host, headers: dict[str, str], body: bytes) -> Reply:
        event = headers.get(host.event_header, "")
        if event in host.ping_events:
            return 200, "pong"
        if event not in host.issue_events:
            return 202, f"ignored {event or 'unnamed'} event"
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return 400, "body is not JSON"
        issue = host.issue_event(payload) if isinstance(payload, dict) else None
        if issue is None:
            return 400, f"not a {host.name} issue event payload"
        return await self._issue(host, issue)

    async def _issue(self, host: Host, event: Issue) -> Reply:
        source = self.sources.get((host.name, event.repo))
        if source is None:
            return 202, f"no {host.name}: source configured for {event.repo or 'this repository'}"
        label = source.label
        if event.action not in ("opened", "labeled") or label not in event.labels:
            return 202, f"ignored: action {event.action!r} without label {label!r}"
        if event.action == "labeled" and label not in event.added_labels:
            return 202, "ignored: another label was added"
        try:
            ticket: Ticket = source.ticket_from_issue(event.issue)
        except (ValidationError, KeyError, TypeError) as exc:
            reason = explain(exc) if isinstance(exc, ValidationError) else f"missing {exc}"
            return 422, f"issue #{event.issue.get('number')}: {reason}"
        return await self.start(source, Fetched(tickets=[ticket]))


# ------------------------------------------------------------------------------------------- HTTP


class _TooLarge(Exception):
    pass


class _HeadersTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(receiver: WebhookReceiver, trusted_proxies: list[Network] | None = None) -> Starlette:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    trusted = trusted_proxies or []

    def reply(status: int, message: str) -> Response:
        return JSONResponse({"message": message}, status_code=status)

    async def healthz(request: Request) -> Response:
        return reply(200, "ok")

    async def event(request: Request) -> Response:
        host = request.url.path.strip("/")
        peer = request.client.host if request.client else "unknown"
        client = client_address(peer, request.headers.get("x-forwarded-for"), trusted)
        headers = {name.lower(): value for name, value in request.headers.items()}
        delivery = headers.get(HOSTS[host].delivery_header, "-")[:MAX_DELIVERY_ID]
        try:
            if sum(len(name) + len(value) for name, value in request.headers.raw) > MAX_HEADER_BYTES:
                raise _HeadersTooLarge
            body = await asyncio.wait_for(_read_body(request), READ_TIMEOUT)
            status, message = await receiver.handle(host, client, headers, body)
        except _HeadersTooLarge:
            status, message = 431, f"headers over {MAX_HEADER_BYTES} bytes"
        except _TooLarge:
            status, message = 413, f"body over {MAX_BODY_BYTES} bytes"
        except TimeoutError:
            status, message = 408, "request not received in time"
        except Exception:  # a failing start must not kill the server; the host may redeliver a 5xx
            log.exception("%s delivery %s failed", host, delivery)
            status, message = 500, "internal error"
        log.info(
            "POST /%s %d from %s delivery %s event %s: %s",
            host,
            status,
            client,
            delivery,
            headers.get(HOSTS[host].event_header, "-")[:60],
            message,
        )
        return reply(status, message)

    async def not_found(request: Request, exc: Exception) -> Response:
        return reply(404, f"no such path: {request.url.path[:100]}")

    async def wrong_method(request: Request, exc: Exception) -> Response:
        response = reply(
            405, f"{request.url.path} takes {'GET' if request.url.path == '/healthz' else 'POST'}"
        )
        response.headers["Allow"] = "GET" if request.url.path == "/healthz" else "POST"
        return response

    routes = [Route("/healthz", healthz, methods=["GET"])]
    routes += [Route(f"/{name}", event, methods=["POST"]) for name in HOSTS]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})


# ----------------------------------------------------------------------------------------- serving


def issue_sources(settings: Settings) -> list[Any]:
    kinds = tuple(f"{name}:" for name in HOSTS)
    found = [open_source(text, settings) for text in settings.sources if text.startswith(kinds)]
    if not found:
        raise SourceError(
            "the webhook serves github:, gitlab: and gitea: sources; list at least one under `sources`"
        )
    return found


def intake_starter(client: Any, settings: Settings) -> StartBatch:
    """Start an event's tickets through intake (its dependency checks included), as (status, message):
    200 when started or already known, 422 when refused, 503 when starting failed (retry later)."""
    from clients import intake

    async def start(source: TicketSource, fetched: Fetched) -> Reply:
        report = await intake.run_intake(client, settings, source, fetched=fetched)
        done = [*(f"started {t}" for t in report.started), *(f"{t} already known" for t in report.existing)]
        if report.errors and not done:
            return 503, "; ".join(report.errors)
        if report.rejected and not done:
            return 422, "; ".join(report.rejected)
        return 200, "; ".join([*done, *report.rejected, *report.errors]) or "nothing to start"

    return start


def server_config(app: Starlette, host: str, port: int) -> Any:
    """uvicorn's configuration for the webhook (a uvicorn.Config)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # the process' logging (JSON, redacted) is configured by the caller
        access_log=False,  # one line per event is logged by the app, with the outcome
        proxy_headers=False,  # client_address decides, from webhook_trusted_proxies only
        server_header=False,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=5,
        lifespan="off",
    )


async def serve_webhook(
    settings: Settings, host: str, port: int, *, started: asyncio.Event | None = None
) -> None:
    import uvicorn

    from clients.connect import connect

    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""
    if not secret:  # before connecting: a misconfigured webhook says so even while Temporal is away
        raise SourceError("the webhook needs a secret: set webhook_secret (TICKETFLOW_WEBHOOK_SECRET)")
    sources = issue_sources(settings)
    trusted = parse_networks(settings.webhook_trusted_proxies)
    client = await connect(settings)
    deliveries = DeliveryLog(settings.state_dir / "webhook" / "deliveries.log")
    receiver = WebhookReceiver(secret, sources, intake_starter(client, settings), deliveries)
    config = server_config(create_app(receiver, trusted), host, port)
    ready = started or asyncio.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready.set()

    log.info("webhook listening on http://%s:%s (%s)", host, port, ", ".join(f"/{h}" for h in HOSTS))
    await Server(config).serve()

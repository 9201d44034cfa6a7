"""/healthz, /readyz and the "tickets in each state now" gauge of a worker.

/healthz answers 200 while the process' event loop runs. /readyz answers 200 once the client has
reached Temporal and every worker is polling, 503 otherwise (with the reason). Gauges from workflow code
cannot be replay-safe, so tickets-per-state comes from a Temporal visibility count made here every
`interval` seconds: it is what the Web UI's list shows, and identical on every worker (use max()).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.runtime import Runtime

from workflows.contracts import TicketState, TicketStatus

log = logging.getLogger("ticketflow.health")
REFRESH_SECONDS = 15.0
LIVE_STATES = [state for state in TicketState if not state.is_final]


@dataclass
class Readiness:
    """What /readyz reports; the worker runner fills it in."""

    connected: bool = False
    polling: Callable[[], bool] = field(default=lambda: False)
    reason: str = "starting"

    def check(self) -> tuple[bool, str]:
        if not self.connected:
            return False, "not connected to Temporal"
        if not self.polling():
            return False, self.reason if self.reason != "starting" else "workers are not polling"
        return True, "ok"


async def count_by_state(client: Client, task_queue: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in LIVE_STATES:
        query = (
            f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running' AND TicketState = '{state.value}'"
        )
        counts[state.value] = (await client.count_workflows(query)).count
    return counts


async def oldest_blocked_seconds(client: Client, task_queue: str, limit: int = 50) -> float:
    """Age of the longest wait among BLOCKED tickets (their status knows since when)."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running' AND TicketState = 'BLOCKED'"
    now = datetime.now(UTC)
    oldest = 0.0
    async for execution in client.list_workflows(query, limit=limit):
        handle = client.get_workflow_handle(execution.id)
        with contextlib.suppress(Exception):  # a ticket moving on mid-count is fine
            status: TicketStatus = await handle.query(
                "status", result_type=TicketStatus, rpc_timeout=timedelta(seconds=2)
            )
            if status.blocked_since is not None:
                oldest = max(oldest, (now - status.blocked_since).total_seconds())
    return oldest


class HealthServer:
    def __init__(
        self, client: Client, task_queue: str, readiness: Readiness, interval: float = REFRESH_SECONDS
    ) -> None:
        self.client, self.task_queue, self.readiness, self.interval = client, task_queue, readiness, interval
        gauge_meter = (client.service_client.config.runtime or Runtime.default()).metric_meter
        self._gauge = gauge_meter.create_gauge("ticketflow_tickets_current", "tickets in each live state now")
        self._ready_gauge = gauge_meter.create_gauge("ticketflow_worker_ready", "1 while /readyz is ok")
        self._oldest_blocked = gauge_meter.create_gauge_float(
            "ticketflow_blocked_oldest_seconds", "how long the longest-blocked ticket has waited", "s"
        )
        self._server: asyncio.Server | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self._refresher = asyncio.create_task(self._refresh_forever())
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("health on http://%s:%d/healthz and /readyz", host, bound)
        return bound

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def refresh(self) -> None:
        try:
            self.readiness.connected = await self.client.service_client.check_health(
                timeout=timedelta(seconds=5)
            )
        except Exception:  # unreachable: not ready, and /readyz says so
            self.readiness.connected = False
        ok, _ = self.readiness.check()
        self._ready_gauge.set(1 if ok else 0)
        counts = await count_by_state(self.client, self.task_queue)
        for state, count in counts.items():
            self._gauge.set(count, {"state": state})
        oldest = await oldest_blocked_seconds(self.client, self.task_queue) if counts["BLOCKED"] else 0.0
        self._oldest_blocked.set(oldest)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # visibility hiccups must not end the worker
                log.warning("could not count tickets by state: %s", exc)
            await asyncio.sleep(self.interval)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            path = request.decode(errors="replace").split(" ")[1] if request.count(b" ") >= 2 else ""
            status, body = self._answer(path.split("?")[0])
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, path: str) -> tuple[str, dict[str, object]]:
        if path == "/healthz":
            return "200 OK", {"status": "ok"}
        if path == "/readyz":
            ok, reason = self.readiness.check()
            return ("200 OK" if ok else "503 Service Unavailable"), {"ready": ok, "reason": reason}
        return "404 Not Found", {"error": f"unknown path {path!r}; try /healthz or /readyz"}

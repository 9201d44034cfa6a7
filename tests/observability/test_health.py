"""/healthz and /readyz of a worker whose workers are not polling."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from tests.observability.conftest import free_port
from workers.health import HealthServer, Readiness


async def test_readyz_says_why_it_is_not_ready(client: Client) -> None:
    readiness = Readiness(polling=lambda: False)
    server = HealthServer(client, "no-such-queue", readiness, interval=0.2)
    port = await server.start("127.0.0.1", free_port())
    try:
        await server.refresh()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"ready": False, "reason": "workers are not polling"}
            readiness.polling = lambda: True
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await server.stop()

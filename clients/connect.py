"""Connecting to Temporal the same way everywhere (CLI, worker, tests, benchmarks)."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from activities.settings import Settings
from workers.tracing import tracing_interceptor
from workflows.visibility import SEARCH_ATTRIBUTES


class TemporalUnavailable(Exception):
    pass


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client with ticketflow's converter and the tracing interceptor (workers inherit it).

    `runtime` carries the worker's Prometheus endpoint; a process has one, so pass it on every connect.
    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            data_converter=pydantic_data_converter,
            interceptors=[tracing_interceptor()],
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); start it with `ticketflow dev`"
        ) from exc


async def ensure_search_attributes(client: Client) -> None:
    """Register ticketflow's search attributes if the server lacks them (an upsert of an unknown one
    would stall every ticket's workflow task)."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        key.name: int(key.indexed_value_type)
        for key in SEARCH_ATTRIBUTES
        if key.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)  # type: ignore[arg-type]
        )

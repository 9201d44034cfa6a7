"""Connecting to Temporal the same way everywhere (CLI, worker, tests, benchmarks)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.settings import Settings


class TemporalUnavailable(Exception):
    pass


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); start it with `ticketflow dev`"
        ) from exc

"""Keeping an activity's heartbeat alive while it awaits something slow and silent.

A heartbeat timeout is how Temporal notices a dead worker, so long awaits (a fetch of a big repository,
a test suite that prints nothing) must keep heartbeating or a healthy attempt would be declared lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio import activity

T = TypeVar("T")


async def with_heartbeats(aw: Awaitable[T], every: float = 5.0, *details: Any) -> T:
    """Await aw, heartbeating every `every` seconds until it finishes; cancelling us cancels it."""
    task = asyncio.ensure_future(aw)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat(*details)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""The Temporal Web UI tells a BLOCKED ticket's story: headless Chromium reads its current details."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.settings import Settings
from clients.devserver import temporal_binary
from tests.helpers import example_ticket, in_state, submit, wait_for_status
from tests.observability.chromium_cdp import chromium_binary, open_page
from tests.observability.conftest import free_port
from workers.main import run_workers
from workflows.contracts import TicketState
from workflows.visibility import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "webui-blocked.png"


@pytest_asyncio.fixture(loop_scope="session")
async def ui_env() -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    """A dev server of its own with the Web UI on a free port (the session server is headless)."""
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        ui=True,
        ui_port=ui_port,
        dev_server_extra_args=["--ui-disable-news-fetch"],
    )
    yield env, ui_port
    await env.shutdown()


async def test_blocked_ticket_shows_its_reason_in_the_web_ui(
    ui_env: tuple[WorkflowEnvironment, int], settings: Settings, tmp_path: Path
) -> None:
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    env, ui_port = ui_env
    ui_settings = settings.model_copy(
        update={"temporal_address": env.client.service_client.config.target_host, "health_address": ""}
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_workers(env.client, ui_settings, stop))
    try:
        ticket = example_ticket("demo-5-rounding.md")
        await submit(env.client, ui_settings, ticket)
        await wait_for_status(env.client, ticket.id, in_state(TicketState.BLOCKED))

        url = f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/ticket-{ticket.id}"
        async with open_page(url, tmp_path / "chrome-profile", free_port()) as page:
            await page.wait_for_text("User Metadata")
            assert await page.click_text("User Metadata"), "the workflow page has no User Metadata tab"
            # Current details come from a query the UI sends to the running worker.
            text = (await page.wait_for_text("To unblock:")).replace("\u2019", "'")
            assert "State: BLOCKED" in text
            assert "Blocked: the agent needs help: Should round_to use banker's rounding" in text
            assert 'ticketflow unblock demo-5 --guidance "<what the agent should do>"' in text
            assert "Add a round_to helper" in text  # the static summary: the ticket's title
            await asyncio.sleep(0.5)  # let the Markdown frames finish painting
            shot = tmp_path / "webui-blocked.png"
            await page.screenshot(shot)
        assert shot.stat().st_size > 10_000
        if not SCREENSHOT.exists() or os.environ.get("TICKETFLOW_UPDATE_SCREENSHOTS"):
            SCREENSHOT.write_bytes(shot.read_bytes())
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)

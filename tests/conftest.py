"""Shared fixtures: one real Temporal dev server per session, a task queue and state dir per test."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.settings import AgentConfig, RepoConfig, Settings
from clients.devserver import temporal_binary
from clients.example_repo import create_example_remote, demo_agent_config
from workers.main import running_workers
from workflows.visibility import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def example_remote(tmp_path: Path) -> Path:
    return create_example_remote(tmp_path / "remotes" / "calc.git")


@pytest.fixture
def settings(tmp_path: Path, temporal_env: WorkflowEnvironment, example_remote: Path) -> Settings:
    """Settings for one test: its own task queue, state dir and example repository."""
    return Settings(
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"test-{uuid.uuid4().hex[:12]}",
        state_dir=tmp_path / "state",
        host_id="testhost",
        agents={"demo": demo_agent_config()},
        default_agent="demo",
        repos={"calc": RepoConfig(url=str(example_remote))},
        reminder_interval_seconds=3600,
        blocked_timeout_seconds=3600,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def worker(client: Client, settings: Settings) -> AsyncIterator[Settings]:
    """A running worker (shared, host and LLM queues) for the test's settings."""
    async with running_workers(client, settings):
        yield settings


def script_agent(tmp_path: Path, name: str, code: str) -> AgentConfig:
    """A `command` agent running a small Python script written by the test."""
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    return AgentConfig(command=[sys.executable, str(path)])


@pytest.fixture
def examples() -> Iterator[Path]:
    yield ROOT / "examples"

"""Helpers for the model-layer tests: settings pointing at our fake servers, and a worker running the real
activities plus StageProbe, a tiny workflow calling one stage with exactly TicketWorkflow's retry policy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities import build_activities
from activities.settings import AgentConfig, ModelsConfig, ProviderConfig, Settings
from tests.fakes.ollama_server import FakeOllama, Reply
from workflows import policy


def with_models(settings: Settings, providers: dict[str, str], **chains: list[str]) -> Settings:
    """`providers` maps a name to a fake's URL (prefix "openai:" for an OpenAI-compatible one)."""
    configs = {}
    for name, url in providers.items():
        kind = "openai" if url.startswith("openai:") else "ollama"
        configs[name] = ProviderConfig(
            kind=kind,
            base_url=url.removeprefix("openai:"),
            num_ctx=8192,
            connect_timeout_seconds=1,
            read_timeout_seconds=1.5,
        )
    # Small backoff so the real Temporal retries of a test take fractions of a second.
    knobs: dict[str, Any] = {
        "backoff_base_seconds": 0.2,
        "backoff_cap_seconds": 0.5,
        "breaker_failures": 10,  # the breaker has its own tests; here it must not mask the fault
        "breaker_open_seconds": 1,
    }
    models = ModelsConfig(providers=configs, **knobs, **chains)
    return settings.model_copy(update={"models": models})


class StageCall(BaseModel):
    activity: str
    arg: dict[str, Any]


class StageOutcome(BaseModel):
    result: dict[str, Any] | None = None
    error_type: str | None = None
    non_retryable: bool = False
    message: str = ""
    details: list[Any] = []

    @property
    def served_by(self) -> str | None:
        return (self.result or {}).get("model")


_POLICIES = {p.name: p for p in (policy.CLASSIFY, policy.REVIEW)}


@workflow.defn(sandboxed=False)
class StageProbe:
    """Runs one stage activity exactly as TicketWorkflow schedules it and reports how it ended."""

    @workflow.run
    async def run(self, call: StageCall) -> StageOutcome:
        spec = _POLICIES[call.activity]
        try:
            result = await workflow.execute_activity(
                call.activity,
                call.arg,
                start_to_close_timeout=spec.start_to_close,
                heartbeat_timeout=spec.heartbeat,
                retry_policy=spec.retry,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                return StageOutcome(
                    error_type=cause.type,
                    non_retryable=cause.non_retryable,
                    message=cause.message,
                    details=list(cause.details),
                )
            return StageOutcome(error_type=type(cause).__name__, message=str(cause))
        return StageOutcome(result=result)


@asynccontextmanager
async def stage_worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[StageProbe],
        activities=build_activities(settings),
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_heartbeat_throttle_interval=timedelta(seconds=1),
    )
    async with worker:
        yield


async def run_stage(client: Client, settings: Settings, activity: str, arg: BaseModel) -> StageOutcome:
    async with stage_worker(client, settings):
        outcome: StageOutcome = await client.execute_workflow(
            StageProbe.run,
            StageCall(activity=activity, arg=arg.model_dump(mode="json")),
            id=f"stage-{uuid.uuid4().hex[:10]}",
            task_queue=settings.task_queue,
            execution_timeout=timedelta(seconds=60),
        )
    return outcome


# ----------------------------------------------------------------- the ollama agent on the fake

MULTIPLY = "\n\ndef multiply(a: float, b: float) -> float:\n    return a * b\n"
TEST = (
    "import unittest\n\nimport calc\n\n\nclass MultiplyTest(unittest.TestCase):\n"
    "    def test_multiply(self) -> None:\n        self.assertEqual(calc.multiply(4, 2.5), 10)\n"
)


def call(name: str, **arguments: str) -> dict[str, object]:
    return {"name": name, "arguments": arguments}


def multiply_session() -> list[Reply]:
    return [
        Reply(tool_calls=[call("read_file", path="calc.py")], prompt_tokens=300, completion_tokens=20),
        Reply(
            tool_calls=[
                call(
                    "replace_in_file",
                    path="calc.py",
                    old="    return a / b\n",
                    new="    return a / b\n" + MULTIPLY,
                ),
                call("write_file", path="tests/test_multiply.py", content=TEST),
            ],
            prompt_tokens=500,
            completion_tokens=120,
        ),
        Reply(tool_calls=[call("run_tests")], prompt_tokens=700, completion_tokens=10),
        Reply(tool_calls=[call("finish", summary="added multiply() with a test")], prompt_tokens=900),
    ]


def use_ollama_agent(worker: Settings, fake: FakeOllama) -> None:
    """Point the running worker's settings at the fake (activities read the same Settings object)."""
    configured = with_models(worker, {"local": fake.url}, code=["big:latest"])
    worker.models = configured.models
    worker.agents["ollama"] = AgentConfig(kind="ollama", max_turns=8)

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
from activities.settings import ModelsConfig, ProviderConfig, Settings
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

"""Pieces every benchmark shares: a private dev server, worker settings, no-op activities, starting a ticket,
the machine, the last JSON line."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.settings import AgentConfig, RepoConfig, Settings, to_toml
from clients.devserver import temporal_binary
from workflows import policy, visibility
from workflows.contracts import (
    AgentRequest,
    AgentResult,
    CheckReport,
    ChecksRequest,
    Classification,
    ClassifyRequest,
    PullRequestRef,
    PullRequestRequest,
    ReleaseRequest,
    ReleaseResult,
    ReviewReport,
    ReviewRequest,
    Ticket,
    TicketResult,
    TicketRun,
    TicketState,
    Workspace,
    WorkspaceRequest,
    workflow_id_for,
)
from workflows.ticket import TicketWorkflow


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal dev server of our own (in-memory), with ticketflow's search attributes."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=visibility.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


def worker_settings(
    client: Client, state_dir: Path, remote: Path, agent: AgentConfig, **extra: Any
) -> Settings:
    """Settings for a benchmark worker: its own queue and state, no metrics/health ports to collide on."""
    values: dict[str, Any] = {
        "temporal_address": client.service_client.config.target_host,
        "task_queue": f"bench-{uuid.uuid4().hex[:12]}",
        "state_dir": state_dir,
        "host_id": "bench",
        "agents": {"bench": agent},
        "default_agent": "bench",
        "repos": {"calc": RepoConfig(url=str(remote))},
        "metrics_address": "",
        "health_address": "",
        "reminder_interval_seconds": 3600,
        "blocked_timeout_seconds": 24 * 3600,
    }
    values.update(extra)
    return Settings(**values)


def script_agent(folder: Path, name: str, code: str) -> AgentConfig:
    """A `command` agent running a small Python script (sandbox off: we time ticketflow, not bwrap)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(code)
    return AgentConfig(command=[sys.executable, str(path)], sandbox="off")


class NoopActivities:
    """ticketflow's activities under their real names, doing nothing but returning a valid result: the six
    stages, and release_workspace, which TicketWorkflow calls after DONE."""

    def __init__(self, host_queue: str) -> None:
        # Workspace-bound activities follow Workspace.host_queue; a benchmark points it at a queue its own
        # worker polls, so the whole ticket stays on that worker.
        self._host_queue = host_queue

    @activity.defn(name=policy.CLASSIFY.name)
    async def classify(self, request: ClassifyRequest) -> Classification:
        return Classification()

    @activity.defn(name=policy.PREPARE_WORKSPACE.name)
    async def prepare_workspace(self, request: WorkspaceRequest) -> Workspace:
        ticket = request.ticket
        return Workspace(
            path=f"/noop/{ticket.id}",
            branch=ticket.branch,
            base_branch=ticket.base_branch,
            base_commit="0" * 40,
            repo_url=ticket.repo,
            host_queue=self._host_queue,
        )

    @activity.defn(name=policy.RUN_AGENT.name)
    async def run_agent(self, request: AgentRequest) -> AgentResult:
        return AgentResult(outcome="done")

    @activity.defn(name=policy.RUN_CHECKS.name)
    async def run_checks(self, request: ChecksRequest) -> CheckReport:
        return CheckReport(passed=True, command="noop")

    @activity.defn(name=policy.REVIEW.name)
    async def review(self, request: ReviewRequest) -> ReviewReport:
        return ReviewReport()

    @activity.defn(name=policy.OPEN_PR.name)
    async def open_pr(self, request: PullRequestRequest) -> PullRequestRef:
        return PullRequestRef(
            url=f"noop://{request.ticket.id}", number=1, branch=request.workspace.branch, host="noop"
        )

    @activity.defn(name=policy.RELEASE_WORKSPACE.name)
    async def release_workspace(self, request: ReleaseRequest) -> ReleaseResult:
        return ReleaseResult(action="kept")

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.classify,
            self.prepare_workspace,
            self.run_agent,
            self.run_checks,
            self.review,
            self.open_pr,
            self.release_workspace,
        ]


async def start_ticket(client: Client, settings: Settings, ticket: Ticket) -> None:
    """Start the real TicketWorkflow the way `ticketflow submit` does (minus the repo reachability check)."""
    from clients.tickets import run_options

    await start_run(client, run_options(settings, ticket), settings.task_queue)


async def start_run(
    client: Client, run: TicketRun, task_queue: str
) -> WorkflowHandle[TicketWorkflow, TicketResult]:
    """Start TicketWorkflow with the search attributes a real submit sets; the workflow upserts them."""
    ticket = run.ticket
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(visibility.TICKET_STATE, TicketState.QUEUED.value),
            SearchAttributePair(visibility.TICKET_PRIORITY, ticket.priority),
            SearchAttributePair(visibility.TICKET_REPO, ticket.repo),
        ]
    )
    return await client.start_workflow(
        TicketWorkflow.run,
        run,
        id=workflow_id_for(ticket.id),
        task_queue=task_queue,
        search_attributes=attributes,
    )


def machine() -> dict[str, Any]:
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_mb": memory_kib // 1024,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def rss_mb(pid: int | None = None) -> float:
    """Resident set size from /proc (VmRSS), in MiB."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def emit(result: dict[str, Any]) -> None:
    """The last line every benchmark prints: one JSON object."""
    print(json.dumps(result), flush=True)


def write_config(path: Path, values: dict[str, Any]) -> None:
    """A ticketflow.toml for the worker process."""
    path.write_text(to_toml(values))

"""Chaos harness: worker processes we can SIGKILL, a journal of agent steps, and the end-of-run report.

Sizes come from the environment so the same tests run small in CI and in full by hand:
  TICKETFLOW_CHAOS_TICKETS  tickets per scenario (default 6)
  TICKETFLOW_CHAOS_KILLS    worker SIGKILLs in the kill scenario (default 2)
  TICKETFLOW_CHAOS_SEED     random seed for the kill intervals (default: random, printed)
Full form (docs/benchmarks.md):
  TICKETFLOW_CHAOS_TICKETS=100 TICKETFLOW_CHAOS_KILLS=10 .venv/bin/python -m pytest tests/chaos -s
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from activities.settings import Settings
from bench.harness import write_config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: worker and server crash tests (tests/chaos)")


def chaos_size() -> tuple[int, int]:
    return int(os.environ.get("TICKETFLOW_CHAOS_TICKETS", "6")), int(
        os.environ.get("TICKETFLOW_CHAOS_KILLS", "2")
    )


def chaos_random() -> random.Random:
    seed = int(os.environ.get("TICKETFLOW_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"chaos seed {seed} (TICKETFLOW_CHAOS_SEED={seed} repeats the kill timing)")
    return random.Random(seed)


# The agent: two idempotent steps, each journaled when it runs, so steps run twice are counted.
AGENT = """\
import os, pathlib, time
journal = pathlib.Path({journal!r})
root = pathlib.Path(os.environ["TICKETFLOW_WORKTREE"])
ticket = root.name
done = int(os.environ.get("TICKETFLOW_RESUME_STEP", "0"))
for step in (1, 2):
    if step <= done:
        continue
    time.sleep({step_seconds})
    (root / "chaos").mkdir(exist_ok=True)
    (root / "chaos" / f"step{{step}}.txt").write_text(f"{{ticket}} step {{step}}\\n")
    with journal.open("a") as out:
        out.write(f"{{ticket}} {{step}}\\n")
    print(f"::ticketflow step::chaos step {{step}}", flush=True)
"""


def chaos_config(settings: Settings, folder: Path, step_seconds: float = 0.6) -> tuple[Path, Path]:
    """A ticketflow.toml for worker processes of this test, and the journal its agent writes."""
    folder.mkdir(parents=True, exist_ok=True)
    journal = folder / "journal.txt"
    journal.touch()
    agent = folder / "chaos_agent.py"
    agent.write_text(AGENT.format(journal=str(journal), step_seconds=step_seconds))
    config = folder / "ticketflow.toml"
    repo = settings.repos["calc"]
    write_config(
        config,
        {
            "temporal_address": settings.temporal_address,
            "task_queue": settings.task_queue,
            "state_dir": str(settings.state_dir),
            "host_id": settings.host_id,
            "default_agent": "chaos",
            "metrics_address": "",
            "health_address": "",
            "log_format": "text",
            "log_level": "WARNING",
            "agents": {"chaos": {"command": [sys.executable, str(agent)], "sandbox": "off"}},
            "repos": {"calc": {"url": repo.url}},
        },
    )
    return config, journal


async def wait_until_polling(client: Client, task_queue: str, pid: int, timeout: float = 60) -> None:
    """Until the worker process `pid` polls task_queue for activities (SDK identity: "<pid>@<host>")."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(RPCError):
            pollers = (await client.workflow_service.describe_task_queue(request)).pollers
            if any(p.identity.startswith(f"{pid}@") for p in pollers):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"worker {pid} did not poll {task_queue} within {timeout:.0f}s")


class WorkerProcess:
    """`ticketflow worker` in its own process group: SIGKILL takes the agent processes down with it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "TICKETFLOW_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clients.cli", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL, like a machine losing power: no graceful shutdown, no final heartbeats."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ChaosReport:
    scenario: str
    tickets: int
    done: int = 0
    lost: list[str] = field(default_factory=list)  # not DONE at the end, with their state below
    not_done: dict[str, str] = field(default_factory=dict)
    duplicate_prs: int = 0
    redone_agent_steps: int = 0
    activity_retries: int = 0
    worker_kills: int = 0
    server_restarts: int = 0
    seconds: float = 0.0
    last_done_s: float = 0.0

    def line(self) -> str:
        return json.dumps({"chaos": asdict(self)})


def pull_requests_by_branch(remote: Path) -> Counter[str]:
    folder = remote / "ticketflow-pulls"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    return Counter(str(r["head"]) for r in records)


def redone_steps(journal: Path) -> int:
    runs = Counter(journal.read_text().split("\n"))
    runs.pop("", None)
    return sum(count - 1 for count in runs.values())


async def activity_retries(client: Client, workflow_ids: list[str]) -> int:
    """Attempts beyond the first, from each ticket's history (a retried attempt records only its start)."""
    retries = 0
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                retries += max(0, event.activity_task_started_event_attributes.attempt - 1)
    return retries

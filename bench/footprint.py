"""Footprint: the worker's memory with N tickets parked on a human (BLOCKED), against the same worker idle.

The worker is the production one, `ticketflow worker`, in its own process, configured by a TOML file
like any deployment. Every ticket runs for real up to BLOCKED: classify, a real git worktree from the
cached mirror of the example repository, and a `command` agent that asks a question
(`::ticketflow blocked::...`). The baseline is the same worker's RSS once it is connected and polling,
before any ticket, measured in the same run. All N workflows stay in the worker's sticky cache (the
SDK's default max_cached_workflows is 1000), which is the expensive case.

Figures: RSS idle, RSS with N blocked, per-ticket cost; target <= 250 MB with 500 blocked.
Run: `.venv/bin/python -m bench.footprint`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.harness import dev_server, emit, machine, rss_mb, start_ticket, worker_settings, write_config
from clients.example_repo import create_example_remote
from workflows.contracts import Ticket

TARGET_MB = 250.0
ASKING_AGENT = "import sys\nprint('::ticketflow blocked::which rounding mode do you want?', flush=True)\n"


async def wait_blocked(client: Client, count: int, timeout: float) -> float:
    query = "WorkflowType = 'TicketWorkflow' AND TicketState = 'BLOCKED'"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        found = (await client.count_workflows(query)).count
        if found >= count:
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    raise RuntimeError(f"only {found} of {count} tickets were BLOCKED after {timeout:.0f}s")


async def settle_rss(pid: int, seconds: float = 3.0) -> float:
    """RSS after the worker has been quiet a moment (the highest of a few samples)."""
    samples = []
    for _ in range(int(seconds / 0.5)):
        await asyncio.sleep(0.5)
        samples.append(rss_mb(pid))
    return max(samples)


async def run(count: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as scratch:
        root = Path(scratch)
        remote = create_example_remote(root / "remotes" / "calc.git")
        agent_path = root / "asking_agent.py"
        agent_path.write_text(ASKING_AGENT)
        async with dev_server() as env:
            base = worker_settings(env.client, root / "state", remote, _agent(agent_path))
            config = root / "ticketflow.toml"
            write_config(
                config,
                {
                    "temporal_address": base.temporal_address,
                    "task_queue": base.task_queue,
                    "state_dir": str(base.state_dir),
                    "host_id": base.host_id,
                    "default_agent": "bench",
                    "metrics_address": "",
                    "health_address": "",
                    "log_level": "WARNING",
                    "reminder_interval_seconds": 3600,
                    "blocked_timeout_seconds": 86400,
                    "agents": {"bench": {"command": [sys.executable, str(agent_path)], "sandbox": "off"}},
                    "repos": {"calc": {"url": str(remote)}},
                },
            )
            env_vars = {**os.environ, "TICKETFLOW_CONFIG": str(config)}
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "clients.cli",
                "worker",
                env=env_vars,
                stdout=subprocess.DEVNULL,
                stderr=(root / "worker.log").open("wb"),
            )
            try:
                await asyncio.sleep(5.0)  # connected, search attributes ensured, pollers running
                if worker.returncode is not None:
                    raise RuntimeError((root / "worker.log").read_text()[-2000:])
                idle = await settle_rss(worker.pid)
                print(f"idle worker RSS {idle:.1f} MB", flush=True)
                tickets = [
                    Ticket(
                        id=f"park-{i}-{uuid.uuid4().hex[:6]}", title="Parked ticket", body="Ask.", repo="calc"
                    )
                    for i in range(count)
                ]
                for start in range(0, count, 50):
                    await asyncio.gather(
                        *(start_ticket(env.client, base, t) for t in tickets[start : start + 50])
                    )
                took = await wait_blocked(env.client, count, timeout)
                print(f"{count} tickets BLOCKED after {took:.1f}s", flush=True)
                blocked = await settle_rss(worker.pid)
                print(f"worker RSS with {count} blocked {blocked:.1f} MB", flush=True)
            finally:
                worker.terminate()
                try:
                    await asyncio.wait_for(worker.wait(), 30)
                except TimeoutError:
                    worker.kill()
                    await worker.wait()
    return {
        "benchmark": "footprint",
        "tickets_blocked": count,
        "workspace": "real git worktrees (example repo), real classify and command agent; sandbox off",
        "seconds_to_block_all": round(took, 1),
        "rss_idle_mb": round(idle, 1),
        "rss_blocked_mb": round(blocked, 1),
        "ratio_vs_idle": round(blocked / idle, 2),
        "kb_per_blocked_ticket": round((blocked - idle) * 1024 / count, 1),
        "target_mb": TARGET_MB,
        "meets_target": blocked <= TARGET_MB,
        "machine": machine(),
    }


def _agent(path: Path) -> Any:
    from activities.settings import AgentConfig

    return AgentConfig(command=[sys.executable, str(path)], sandbox="off")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=500, help="tickets parked on a human")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed to get them all BLOCKED")
    args = parser.parse_args(argv)
    emit(asyncio.run(run(args.count, args.timeout)))


if __name__ == "__main__":
    main()

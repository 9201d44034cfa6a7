"""`ticketflow demo`: the example backlog, end to end, on a local dev server and worker.

It picks the model server (a real Ollama at OLLAMA_HOST, else our fake one: clients/demo_models.py),
starts (or reuses) the dev server and a worker in the background, creates the example repository as a
local bare remote, submits every ticket in examples/backlog to the native ollama agent and waits until
each is DONE or BLOCKED. The processes keep running afterwards so `ticketflow unblock` can move the
blocked ticket on; `ticketflow stop` ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.settings import AgentConfig, RepoConfig, Settings, to_toml
from clients import devserver, tickets
from clients.connect import connect, ensure_search_attributes
from clients.demo_models import ModelServer, ModelServerError, choose, describe
from clients.example_repo import create_example_remote, example_tickets
from clients.ticket_files import load_ticket_file
from workflows.contracts import TicketState

SETTLED = {
    TicketState.DONE.value,
    TicketState.BLOCKED.value,
    TicketState.FAILED.value,
    TicketState.CANCELLED.value,
}


def demo_settings(settings: Settings, server: ModelServer) -> tuple[Settings, Path]:
    """The demo's repository, the native ollama agent and the model chains, in settings and on disk."""
    remote = create_example_remote(settings.state_dir / "demo" / "calc.git")
    agent = AgentConfig(kind="ollama", max_turns=server.max_turns)
    config = settings.state_dir / "demo" / "ticketflow.toml"
    config.write_text(
        to_toml(
            {
                "default_agent": "ollama",
                "repos": {"demo": {"url": str(remote)}},
                "agents": {"ollama": {"kind": "ollama", "max_turns": server.max_turns}},
                "models": server.models.model_dump(mode="json", exclude_none=True),
            }
        )
    )
    updated = settings.model_copy(
        update={
            "default_agent": "ollama",
            "repos": {**settings.repos, "demo": RepoConfig(url=str(remote))},
            "agents": {**settings.agents, "ollama": agent},
            "models": server.models,
        }
    )
    return updated, config


async def start_services(settings: Settings, config: Path) -> None:
    if not devserver.port_open(settings.temporal_address):
        devserver.start_background(settings, "dev-server", devserver.dev_server_command(settings))
        await devserver.wait_for_port(settings.temporal_address, timeout=60)
        print(f"started the Temporal dev server on {settings.temporal_address}")
    if devserver.stop_background(settings, "worker"):
        print("restarted the background worker with the demo configuration")
    env = {
        "TICKETFLOW_CONFIG": str(config),
        "TICKETFLOW_STATE_DIR": str(settings.state_dir),
        "TICKETFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
        "TICKETFLOW_NAMESPACE": settings.namespace,
        "TICKETFLOW_TASK_QUEUE": settings.task_queue,
    }
    devserver.start_background(settings, "worker", devserver.worker_command(), env)
    print(f"started a worker (log: {settings.state_dir / 'worker.log'})")


async def submit_backlog(client: Client, settings: Settings) -> list[str]:
    ids = []
    for path in example_tickets():
        ticket = load_ticket_file(path, {"repo": "demo"})
        ticket = ticket.model_copy(update={"repo": "demo"})
        result = await tickets.submit(client, settings, ticket)
        verb = "submitted" if result.started else f"already submitted ({result.existing_state})"
        print(f"  {ticket.id:<8} {verb:<28} {ticket.title}")
        ids.append(ticket.id)
    return ids


async def wait_until_settled(client: Client, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for ticket_id in ids:
            state = (await tickets.describe(client, ticket_id)).state
            if states.get(ticket_id) != state:
                print(f"  {ticket_id:<8} {state}")
                states[ticket_id] = state
        if all(states.get(i) in SETTLED for i in ids):
            break
        await asyncio.sleep(0.5)
    return states


def pr_branches(remote: Path) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(remote), "branch", "--list", "ticketflow/*", "--format=%(refname:short)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.split()


async def report(
    client: Client, settings: Settings, config: Path, states: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Print the outcome; returns it per ticket (for --json)."""
    print("\nResult:")
    outcome: dict[str, dict[str, Any]] = {}
    for ticket_id, state in states.items():
        status = await tickets.status(client, ticket_id)
        outcome[ticket_id] = {
            "state": state,
            "pr_url": status.pr_url,
            "blocked_reason": status.blocked_reason,
            "models_used": status.models_used,
        }
        line = f"  {ticket_id:<8} {state:<10}"
        if state in (TicketState.DONE.value, TicketState.BLOCKED.value):
            line += f" {status.pr_url or status.blocked_reason or ''}"
            if status.models_used:
                line += f"\n           models: {', '.join(status.models_used)}"
        print(line)
    remote = Path(settings.repos["demo"].url)
    print(f"\nPR branches in the local remote {remote}:")
    for branch in pr_branches(remote):
        print(f"  {branch}")
    print(f"\nWeb UI: {settings.ui_url}/namespaces/{settings.namespace}/workflows")
    for ticket_id, state in states.items():
        if state == TicketState.BLOCKED.value:
            print(f'To unblock {ticket_id}: ticketflow unblock {ticket_id} --guidance "<your answer>"')
    print(
        f"Submit your own tickets to the demo repo with: TICKETFLOW_CONFIG={config} ticketflow submit FILE.md"
    )
    print("Stop the background server, worker and any fake model server with: ticketflow stop")
    return outcome


async def run_demo(
    settings: Settings, timeout: float | None = None, offline: bool = False, as_json: bool = False
) -> int:
    """The demo; with as_json the narration goes to stderr and one JSON summary to stdout."""
    if not as_json:
        code, _ = await _demo(settings, timeout, offline)
        return code
    with contextlib.redirect_stdout(sys.stderr):
        code, summary = await _demo(settings, timeout, offline)
    print(json.dumps(summary, indent=2, default=str))
    return code


async def _demo(settings: Settings, timeout: float | None, offline: bool) -> tuple[int, dict[str, Any]]:
    asked = os.environ.get("OLLAMA_HOST")
    try:
        server = await choose(settings, asked, offline=offline)
    except ModelServerError as error:
        print(f"error: {error}")
        return 1, {"error": str(error)}
    print(describe(server, asked, offline))
    # A real model on a CPU takes minutes per ticket; the fake answers at once.
    timeout = timeout if timeout is not None else (3600.0 if server.real else 300.0)
    settings, config = demo_settings(settings, server)
    await start_services(settings, config)
    client = await connect(settings)
    await ensure_search_attributes(client)
    print("Submitting the example backlog:")
    ids = await submit_backlog(client, settings)
    print("Waiting for the tickets (each is a Temporal workflow):")
    states = await wait_until_settled(client, ids, timeout)
    outcome = await report(client, settings, config, states)
    summary: dict[str, Any] = {
        "model_server": {"url": server.url, "real_ollama": server.real, "version": server.version},
        "config": str(config),
        "web_ui": f"{settings.ui_url}/namespaces/{settings.namespace}/workflows",
        "tickets": outcome,
    }
    unsettled = [i for i in ids if states.get(i) not in SETTLED]
    if unsettled:
        print(f"still running after {timeout:.0f}s: {', '.join(unsettled)}")
        return 1, summary
    return 0, summary

"""Chaos: tickets keep going while the worker is SIGKILLed, and while the Temporal server restarts.

Every ticket must end DONE with exactly one PR. The report line (`{"chaos": {...}}`, printed; see it with
`-s`) counts lost tickets, duplicate PRs, agent steps that ran twice and activity attempts that were
retried. A kill lands mid-activity most of the time; Temporal notices only when the activity's heartbeat
timeout passes (30 s, 60 s for the agent: workflows/policy.py), so that is what these tests mostly wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.settings import RepoConfig, Settings
from clients import tickets
from clients.devserver import dev_server_command, wait_for_port
from clients.example_repo import create_example_remote
from tests.chaos.conftest import (
    ChaosReport,
    WorkerProcess,
    activity_retries,
    chaos_config,
    chaos_random,
    chaos_size,
    pull_requests_by_branch,
    redone_steps,
    wait_until_polling,
)
from workflows.contracts import Ticket, TicketResult, TicketState, workflow_id_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.chaos, pytest.mark.timeout(1800)]


def chaos_tickets(count: int) -> list[Ticket]:
    run = uuid.uuid4().hex[:6]
    return [
        Ticket(id=f"chaos-{run}-{n}", title=f"Chaos ticket {n}", body="Write chaos/step*.txt.", repo="calc")
        for n in range(count)
    ]


@contextlib.contextmanager
def worker_process(config: Path, log: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(config, log)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


async def finish(
    connect: Callable[[], Client], ticket_list: list[Ticket], timeout: float, started: float
) -> tuple[dict[str, TicketResult | None], float]:
    """Each ticket's result (None if it did not end), and seconds from `started` to the last result.

    Stops early once every unfinished ticket is BLOCKED: nothing moves those without a human.
    """
    client = connect()
    waits = {
        asyncio.ensure_future(
            client.get_workflow_handle(workflow_id_for(t.id), result_type=TicketResult).result()
        ): t.id
        for t in ticket_list
    }
    results: dict[str, TicketResult | None] = {t.id: None for t in ticket_list}
    last_done, deadline = 0.0, time.monotonic() + timeout
    pending = set(waits)
    while pending and time.monotonic() < deadline:
        done, pending = await asyncio.wait(pending, timeout=3)
        for task in done:
            results[waits[task]] = None if task.exception() else task.result()
            last_done = time.monotonic() - started
        states = [await state_of(client, waits[task]) for task in pending] if not done else []
        if pending and states and all(state == TicketState.BLOCKED.value for state in states):
            break
    for task in pending:
        task.cancel()
    return results, round(last_done, 1)


async def state_of(client: Client, ticket_id: str, *, with_reason: bool = False) -> str:
    """The ticket's state (and why), or why it could not be read: a worker may be restarting."""
    try:
        status = await tickets.status(client, ticket_id)
    except tickets.TicketOperationError as exc:
        return f"unknown: {exc}"
    reason = status.blocked_reason or (status.stage.value if status.stage else "")
    return f"{status.state.value}: {reason}" if with_reason else status.state.value


async def judge(
    report: ChaosReport,
    client: Client,
    results: dict[str, TicketResult | None],
    remote: Path,
    journal: Path,
    started: float,
) -> ChaosReport:
    report.seconds = round(time.monotonic() - started, 1)
    report.lost = sorted(i for i, r in results.items() if r is None or r.state is not TicketState.DONE)
    report.done = len(results) - len(report.lost)
    for ticket_id in report.lost:
        report.not_done[ticket_id] = await state_of(client, ticket_id, with_reason=True)
    prs = pull_requests_by_branch(remote)
    report.duplicate_prs = sum(count - 1 for count in prs.values())
    report.redone_agent_steps = redone_steps(journal)
    report.activity_retries = await activity_retries(client, [workflow_id_for(i) for i in results])
    print(report.line())
    return report


async def worker_kill_scenario(client: Client, settings: Settings, remote: Path, folder: Path) -> ChaosReport:
    """N tickets on the session's dev server while the worker is SIGKILLed and restarted."""
    count, kills = chaos_size()
    rng = chaos_random()
    config, journal = chaos_config(settings, folder)
    ticket_list = chaos_tickets(count)
    started = time.monotonic()
    report = ChaosReport("worker-sigkill", count)
    with worker_process(config, folder / "worker.log") as worker:
        for ticket in ticket_list:
            await tickets.submit(client, settings, ticket, check_repo=False)
        for _ in range(kills):
            # Kill only once the new process is really at work, at a random moment of its work.
            assert worker.proc is not None
            await wait_until_polling(client, settings.host_queue, worker.proc.pid)
            # Kill at a random moment of the new worker's work. Small runs kill in quick succession, so
            # the victims' heartbeat timeouts (30 s) overlap and CI waits for about one of them; large
            # runs spread their kills over the run.
            await asyncio.sleep(rng.uniform(0.3, max(1.5, count / max(kills, 1) / 2)))
            worker.kill()
            report.worker_kills += 1
            worker.start()
        results, report.last_done_s = await finish(
            lambda: client, ticket_list, timeout=120 + 6 * count, started=started
        )
        # While the worker still runs: the state of an unfinished ticket is a query it answers.
        return await judge(report, client, results, remote, journal, started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def file_backed_server(settings: Settings, log: Path) -> AsyncIterator[Callable[[], None]]:
    """`temporal server start-dev --db-filename` (as `ticketflow dev` runs it); yields a restart function."""
    command = dev_server_command(settings, headless=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        with log.open("ab") as out:
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))

    def restart() -> None:
        procs[-1].kill()  # SIGKILL: the SQLite file must hold everything committed so far
        procs[-1].wait()
        start()

    start()
    try:
        await wait_for_port(settings.temporal_address, 60)
        yield restart
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def connect_when_ready(address: str) -> Client:
    """The port opens a moment before the frontend answers; retry the connection for a while."""
    for _ in range(60):
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError:
            await asyncio.sleep(0.5)
    return await Client.connect(address, data_converter=pydantic_data_converter)


async def server_restart_scenario(settings: Settings, remote: Path, folder: Path) -> ChaosReport:
    """N tickets on a file-backed dev server of our own, SIGKILLed and restarted once mid-run."""
    count, _ = chaos_size()
    rng = chaos_random()
    own = settings.model_copy(
        update={
            "temporal_address": f"127.0.0.1:{free_port()}",
            "state_dir": folder / "state",
            "repos": {"calc": RepoConfig(url=str(remote))},
        }
    )
    own.state_dir.mkdir(parents=True)
    config, journal = chaos_config(own, folder)
    ticket_list = chaos_tickets(count)
    report = ChaosReport("dev-server-restart", count)
    started = time.monotonic()
    async with file_backed_server(own, folder / "server.log") as restart:
        client = await connect_when_ready(own.temporal_address)
        with worker_process(config, folder / "worker.log") as worker:
            for ticket in ticket_list:
                await tickets.submit(client, own, ticket, check_repo=False)
            assert worker.proc is not None
            await wait_until_polling(client, own.host_queue, worker.proc.pid)
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            restart()
            report.server_restarts += 1
            await wait_for_port(own.temporal_address, 60)
            client = await connect_when_ready(own.temporal_address)
            results, report.last_done_s = await finish(
                lambda: client, ticket_list, timeout=120 + 6 * count, started=started
            )
            return await judge(report, client, results, remote, journal, started)


async def test_every_ticket_ends_done_with_one_pr_through_crashes(
    client: Client, settings: Settings, example_remote: Path, tmp_path: Path
) -> None:
    """Both scenarios at once (they share nothing but the machine), so CI waits for the slower only."""
    second_remote = create_example_remote(tmp_path / "remotes2" / "calc.git")
    kill_dir, restart_dir = tmp_path / "kill", tmp_path / "restart"
    reports = await asyncio.gather(
        worker_kill_scenario(client, settings, example_remote, kill_dir),
        server_restart_scenario(settings, second_remote, restart_dir),
    )
    for report, remote, folder in zip(
        reports, (example_remote, second_remote), (kill_dir, restart_dir), strict=True
    ):
        log = (folder / "worker.log").read_text()[-3000:]
        assert report.lost == [], f"{report.scenario}: not DONE {report.not_done}; worker log:\n{log}"
        assert report.duplicate_prs == 0, report.scenario
        assert sum(pull_requests_by_branch(remote).values()) == report.tickets

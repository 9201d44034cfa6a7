"""A hostile `command` agent under DEFAULT settings, on the real dev server with a real worker, bwrap,
pasta and git: it goes for the Temporal frontend (socket and the bundled `temporal` CLI, against another
ticket), other services on the host, the worker's /proc, a fork flood and a full /tmp, and writes what it
got to `$HOME/report.json` (the ticket's run directory on the host), then asks a human (BLOCKED).

Every probe that must fail is also shown to succeed from the host (the test process), so a probe that
cannot work at all would not pass for containment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from activities.agents import jail, sandbox
from activities.proc import run_process
from activities.settings import AgentConfig, Settings
from clients import tickets
from clients.devserver import temporal_binary
from tests.conftest import script_agent
from tests.helpers import example_ticket, in_state, submit, wait_for_status
from workflows.contracts import TicketState

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(sandbox.bwrap_problem() is not None, reason=f"no bwrap: {sandbox.bwrap_problem()}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the namespace and cgroup path is the root worker's"),
]
FAKE_TOKEN = "ghp_containmentFakeToken0123456789abcdef"

HOSTILE = r"""
import errno, json, os, pathlib, socket, subprocess, sys, time

params = json.loads(sys.argv[1])
report = {"pid": os.getpid()}

def connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            conn.settimeout(2)
            return "connected: " + conn.recv(64).decode(errors="replace")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"

for name, (host, port) in params.get("connect", {}).items():
    report[name] = connect(host, port)

if "temporal" in params:
    binary, address, victim = params["temporal"]
    for verb, extra in (("list", []), ("cancel", ["--workflow-id", victim, "--reason", "pwned"])):
        try:
            done = subprocess.run(
                [binary, "workflow", verb, "--address", address, "--namespace", "default", *extra],
                capture_output=True, text=True, timeout=15,
            )
            report["cli_" + verb] = [done.returncode, (done.stdout + done.stderr)[-300:]]
        except (OSError, subprocess.TimeoutExpired) as exc:
            report["cli_" + verb] = [None, str(exc)]

if "proc" in params:
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    report["proc_pids"] = pids
    try:
        environ = pathlib.Path(f"/proc/{params['proc']}/environ")
        report["worker_environ"] = environ.read_bytes().decode(errors="replace")
    except OSError as exc:
        report["worker_environ"] = f"{type(exc).__name__}"
    leaked = []
    for pid in pids:
        try:
            if params["token"].encode() in pathlib.Path(f"/proc/{pid}/environ").read_bytes():
                leaked.append(pid)
        except OSError:
            pass
    report["token_in"] = leaked
    report["token_in_env"] = any(params["token"] in v for v in os.environ.values())

if "fork" in params:
    children = []
    report["fork_error"] = None
    for _ in range(params["fork"]):
        try:
            pid = os.fork()
        except OSError as exc:
            report["fork_error"] = errno.errorcode.get(exc.errno, str(exc.errno))
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    report["forked"] = len(children)
    for pid in children:
        os.kill(pid, 9)
    for pid in children:
        os.waitpid(pid, 0)

if "fill_tmp" in params:
    written, chunk = 0, b"x" * (1024 * 1024)
    try:
        with open("/tmp/fill", "wb") as out:
            while written < params["fill_tmp"]:
                out.write(chunk)
                out.flush()
                written += len(chunk)
        report["tmp_error"] = None
    except OSError as exc:
        report["tmp_error"] = errno.errorcode.get(exc.errno, str(exc.errno))
    report["tmp_written"] = written
    os.unlink("/tmp/fill")

pathlib.Path(os.environ["HOME"], "report.json").write_text(json.dumps(report))
print("REPORT " + json.dumps(report)[:2000], flush=True)
print("::ticketflow blocked::probed", flush=True)
"""

VICTIM = "print('::ticketflow blocked::waiting for a human', flush=True)\n"


@pytest.fixture
def host_token(monkeypatch: pytest.MonkeyPatch, worker: Settings) -> str:
    """A git host token in the worker's environment and settings, where a real one would be."""
    monkeypatch.setenv("TICKETFLOW_GITHUB_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("GITHUB_TOKEN", FAKE_TOKEN)
    worker.github_token = SecretStr(FAKE_TOKEN)
    return FAKE_TOKEN


@contextlib.contextmanager
def listening(host: str = "127.0.0.1", banner: bytes = b"hello") -> Iterator[int]:
    """A TCP server on the host that greets whoever connects; yields its port."""
    server = socket.create_server((host, 0))
    server.settimeout(0.2)
    stop = False

    def serve() -> None:
        while not stop:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(banner)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop = True
        thread.join(2)
        server.close()


def host_address() -> str | None:
    """The host's own non-loopback IPv4 address (no packet is sent), if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.123", 9))
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def hostile(tmp_path: Path, params: dict[str, object], **config: object) -> AgentConfig:
    """The hostile agent with its orders; the temporal CLI, named on its command line, stays readable."""
    agent = script_agent(tmp_path, "hostile", HOSTILE)
    extra = [temporal_binary()] if "temporal" in params else []
    return AgentConfig.model_validate(
        {**agent.model_dump(), "command": [*agent.command, json.dumps(params), *extra], **config}
    )


async def probe(client: Client, worker: Settings, ticket_id: str) -> dict[str, object]:
    """Run the hostile agent as ticket `ticket_id` until it asks for a human; its report."""
    ticket = example_ticket("demo-4-readme.md", id=ticket_id, agent="hostile")
    started = time.monotonic()
    await submit(client, worker, ticket)
    status = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED), timeout=90)
    reports = list((worker.state_dir / "runs" / ticket.id).glob("*/home/report.json"))
    assert reports, f"the agent wrote no report: {status.blocked_reason} {status.last_output}"
    report = dict(json.loads(reports[0].read_text()))
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"{ticket_id}: {json.dumps(report)[:1500]}")
    await tickets.cancel(client, ticket.id, "probe done")
    return report


def refused(result: object) -> bool:
    return isinstance(result, str) and not result.startswith("connected")


def leftovers() -> list[str]:
    """Namespaces and cgroups whose launcher is gone (what a worker's sweep would remove)."""
    names = [p.name for p in jail.NETNS_DIR.glob("tf-*")]
    for base in (jail.CGROUP_ROOT, jail.CGROUP_ROOT / "pids", jail.CGROUP_ROOT / "memory"):
        names += [p.name for p in (base / jail.GROUP).glob("tf-*")]
    return [name for name in names if not jail._launcher_alive(name)]


# ------------------------------------------------------------------------------------- the attacks


async def test_hostile_agent_cannot_reach_temporal_host_services_or_the_workers_proc(
    client: Client, worker: Settings, host_token: str, tmp_path: Path
) -> None:
    worker.agents["victim"] = script_agent(tmp_path, "victim", VICTIM)
    victim = example_ticket("demo-4-readme.md", id="victim-1", agent="victim")
    await submit(client, worker, victim)
    await wait_for_status(client, victim.id, in_state(TicketState.BLOCKED))

    temporal_host, _, temporal_port = worker.temporal_address.rpartition(":")
    own_ip = host_address()
    with listening() as local_port, listening("0.0.0.0") as any_port:
        targets = {
            "temporal": (temporal_host, int(temporal_port)),
            "local_service": ("127.0.0.1", local_port),
            "gateway_service": ("192.0.2.1", any_port),
            **({"host_ip_service": (own_ip, any_port)} if own_ip else {}),
        }
        for name, (host, port) in targets.items():
            # Reachable from the host (the gateway address is pasta's, inside only: its port is the
            # host's 0.0.0.0 service), so a refusal below is the sandbox's doing.
            seen_from_host = ("127.0.0.1", port) if name == "gateway_service" else (host, port)
            with socket.create_connection(seen_from_host, timeout=2):
                pass
        params = {
            # The cloud metadata service (169.254.169.254) is refused by a prohibit route: EACCES.
            "connect": {**targets, "metadata": ("169.254.169.254", 80)},
            "temporal": [temporal_binary(), worker.temporal_address, f"ticket-{victim.id}"],
            "proc": os.getpid(),  # the worker runs in this process
            "token": host_token,
        }
        worker.agents["hostile"] = hostile(tmp_path, params)
        report = await probe(client, worker, "hostile-net")

    for name in targets:
        assert refused(report[name]), f"{name}: {report[name]}"
    assert str(report["metadata"]).startswith("PermissionError"), report["metadata"]
    listed, cancelled = report["cli_list"], report["cli_cancel"]
    assert isinstance(listed, list) and isinstance(cancelled, list)
    assert listed[0] != 0 and cancelled[0] != 0, (listed, cancelled)
    status = await tickets.status(client, victim.id)
    assert status.state is TicketState.BLOCKED, "the other ticket is untouched"

    # Its own pid namespace: bwrap's init, the agent and whatever it started, nothing of the host.
    pids = report["proc_pids"]
    assert isinstance(pids, list) and len(pids) <= 5 and max(pids) < 100, pids
    assert report["worker_environ"] == "FileNotFoundError"
    assert report["token_in"] == [] and report["token_in_env"] is False
    assert Path(f"/proc/{os.getpid()}/environ").read_bytes(), "...which the host can read"
    await tickets.cancel(client, victim.id, "done")
    seconds = report["seconds"]
    assert isinstance(seconds, float) and seconds < 60


async def test_fork_flood_stops_at_max_processes_and_tmp_at_its_cap(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    defaults = AgentConfig(command=["x"])
    cap = defaults.tmp_size_mb * 1024 * 1024
    worker.agents["hostile"] = hostile(tmp_path, {"fork": 2000, "fill_tmp": 2 * cap})
    before = set(leftovers())
    report = await probe(client, worker, "hostile-flood")

    forked = report["forked"]
    assert isinstance(forked, int)
    assert report["fork_error"] == "EAGAIN", report
    # pids.max counts the whole sandbox (bwrap, its init, the agent): nearly all of it went to the flood.
    assert defaults.max_processes - 10 <= forked < defaults.max_processes, forked
    assert report["tmp_error"] == "ENOSPC"
    written = report["tmp_written"]
    assert isinstance(written, int) and cap - 8 * 1024 * 1024 <= written <= cap, written
    # The host is fine, and nothing of the sandbox is left behind.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert set(leftovers()) <= before


async def test_only_the_allowed_loopback_port_is_reachable(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    with listening(banner=b"model api") as allowed, listening(banner=b"secret") as other:
        worker.agents["hostile"] = hostile(
            tmp_path,
            {"connect": {"allowed": ("127.0.0.1", allowed), "other": ("127.0.0.1", other)}},
            loopback_ports=[allowed],
        )
        report = await probe(client, worker, "hostile-ports")
    assert report["allowed"] == "connected: model api"
    assert refused(report["other"]), report["other"]


# --------------------------------------------------------------------------- the launcher's cleanup


def _plan(tmp_path: Path, network: bool = True) -> sandbox.SandboxPlan:
    return sandbox.agent_plan(
        Settings(state_dir=tmp_path / "state"),
        "required",
        network,
        tmp_path,
        [],
        (0, 256, 0),
        max_processes=32,
        tmp_size_mb=8,
    )


def _owned(pid: int) -> list[str]:
    prefix = f"{jail.PREFIX}{pid}-"
    found = [p.name for p in jail.NETNS_DIR.glob(f"{prefix}*")]
    for base in (jail.CGROUP_ROOT / "pids", jail.CGROUP_ROOT / "memory", jail.CGROUP_ROOT):
        found += [str(p) for p in (base / jail.GROUP).glob(f"{prefix}*")]
    return found


async def test_a_timed_out_sandbox_leaves_no_namespace_or_cgroup(tmp_path: Path) -> None:
    spawned: list[int] = []
    argv = sandbox.wrap(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], _plan(tmp_path)
    )
    started = time.monotonic()
    result = await run_process(
        argv,
        cwd=tmp_path,
        env={"PATH": os.defpath},
        timeout=3,
        on_spawn=spawned.append,
    )
    assert result.timed_out and result.tail == ["up"]
    assert time.monotonic() - started < 10, "SIGTERM was forwarded; no SIGKILL grace was needed"
    assert _owned(spawned[0]) == []


async def test_sweep_removes_what_a_sigkilled_launcher_left(tmp_path: Path) -> None:
    argv = sandbox.wrap(["sleep", "60"], _plan(tmp_path))
    launcher = subprocess.Popen(argv, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(_owned(launcher.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_owned(launcher.pid)) == 3, "a namespace and two cgroups (pids, memory)"
    finally:
        # No finally of the launcher runs: what it made stays (unless another worker's sweep takes it).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    removed = sandbox.sweep_leftovers()
    assert _owned(launcher.pid) == [], removed
    pattern = f"--netns {jail.PREFIX}{launcher.pid}-"
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "pasta quits with its namespace"
        time.sleep(0.05)


async def test_a_launcher_whose_worker_is_already_gone_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = sandbox.wrap(["/bin/sh", "-c", f"touch {marker}"], _plan(tmp_path))
    assert argv[3:6] == [str(sandbox.JAIL), "--parent", str(os.getpid())]
    dead = subprocess.Popen(["true"])
    dead.wait()
    argv[5] = str(dead.pid)  # a parent that is not ours any more
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert not marker.exists()
    ran = subprocess.run(sandbox.wrap(["/bin/sh", "-c", "echo ok"], _plan(tmp_path)), capture_output=True)
    assert ran.returncode == 0 and ran.stdout == b"ok\n", "with its real parent it runs"

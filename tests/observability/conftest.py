"""Fixtures for observability tests: a worker with /metrics and /healthz, an agent that reports model
usage, a real Prometheus, and a local HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from activities.settings import AgentConfig, Settings
from clients.connect import connect
from clients.example_repo import demo_agent_config
from workers.main import run_workers
from workers.metrics import metrics_runtime

ROOT = Path(__file__).resolve().parents[2]

USAGE_AGENT = """
import json, os, subprocess, sys
from pathlib import Path

task = json.loads(Path(os.environ["TICKETFLOW_TASK_FILE"]).read_text())
ticket = task["ticket"]
outcome = Path(os.environ["TICKETFLOW_OUTCOME_FILE"])
marker = Path(MARKERS) / ticket["id"]
if "limit-once" in ticket["labels"] and not marker.exists():
    marker.write_text("hit")
    outcome.write_text(json.dumps({"status": "usage_limit", "reason": "demo limit", "retry_after": 1,
                                   "model": "demo-model"}))
    sys.exit(0)
proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, text=True)
blocked = False
for line in proc.stdout:
    blocked = blocked or line.startswith("::ticketflow blocked::")
    print(line, end="", flush=True)
if proc.wait() == 0 and not blocked:
    outcome.write_text(json.dumps({"status": "done", "model": "demo-model",
                                   "tokens": {"prompt": 1200, "completion": 300, "cost_usd": 0.0125}}))
sys.exit(proc.returncode)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """The process' one Prometheus endpoint (a Runtime is per process; created on first use)."""
    port = free_port()
    if metrics_runtime(f"127.0.0.1:{port}") is None:
        pytest.fail(f"could not start the Temporal SDK's Prometheus endpoint on port {port}")
    return port


def usage_agent(tmp_path: Path) -> AgentConfig:
    """The demo agent, wrapped to report a model and token usage, and to hit a usage limit once for
    tickets labelled `limit-once`."""
    markers = tmp_path / "limit-markers"
    markers.mkdir()
    script = tmp_path / "usage_agent.py"
    demo = demo_agent_config().command
    script.write_text(f"MARKERS = {str(markers)!r}\nDEMO = {demo!r}\n" + USAGE_AGENT)
    # The script and its markers live in the test's tmp dir, which the sandbox's private /tmp hides.
    return AgentConfig(command=[sys.executable, str(script)], sandbox="off")


@dataclass
class MetricsWorker:
    settings: Settings
    client: Client
    metrics_url: str
    health_url: str


@pytest_asyncio.fixture(loop_scope="session")
async def metrics_worker(
    settings: Settings, metrics_port: int, tmp_path: Path
) -> AsyncIterator[MetricsWorker]:
    """A worker whose client carries the Prometheus runtime (the session client has none)."""
    health_port = free_port()
    settings.health_address = f"127.0.0.1:{health_port}"
    settings.health_refresh_seconds = 0.5
    settings.agents["demo"] = usage_agent(tmp_path)
    runtime = metrics_runtime("")  # the one created by the metrics_port fixture
    client = await connect(settings, runtime=runtime)
    stop = asyncio.Event()
    task = asyncio.create_task(run_workers(client, settings, stop))
    yield MetricsWorker(
        settings, client, f"http://127.0.0.1:{metrics_port}/metrics", f"http://127.0.0.1:{health_port}"
    )
    stop.set()
    await asyncio.wait_for(task, 60)


# ----------------------------------------------------------------------------------------- Prometheus


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> dict[str, object]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, object] = response.json()
        return body

    def get(self, path: str) -> dict[str, object]:
        body: dict[str, object] = httpx.get(f"{self.url}{path}", timeout=10).json()
        return body


def prometheus_binary(name: str = "prometheus") -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"`{name}` is not installed (Debian package prometheus; .ci/run installs it)")
    return found


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """Start a real Prometheus scraping the given target every second, with the project's alert rules."""
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> Prometheus:
        binary = prometheus_binary()
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
                    "scrape_configs": [
                        {"job_name": "ticketflow-worker", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return Prometheus(url, process)
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


# ------------------------------------------------------------------------------------- HTTP receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP endpoint that records requests; the first `fail_first` requests get a 503."""

    url: str
    requests: list[Received] = field(default_factory=list)
    fail_first: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                failing = state.fail_first > 0
                state.fail_first -= 1 if failing else 0
                if not failing:
                    state.requests.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(503 if failing else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()

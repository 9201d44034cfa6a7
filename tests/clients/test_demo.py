"""The README's demo, as a user runs it: `ticketflow demo`, then `ticketflow unblock`, from a shell."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.ollama_server import FakeOllama, example_backlog_responder, refused_url, serve

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port, ui_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TICKETFLOW_HOME": str(tmp_path / "home"),
        "TICKETFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "TICKETFLOW_UI_PORT": str(ui_port),
        "TICKETFLOW_UI_URL": f"http://127.0.0.1:{ui_port}",
        "TICKETFLOW_TASK_QUEUE": "demo-test",
        "OLLAMA_HOST": refused_url(),  # no Ollama here: the demo must say so and use its fake one
    }
    env.pop("TICKETFLOW_CONFIG", None)
    yield env
    subprocess.run([BIN / "ticketflow", "stop"], env=env, capture_output=True, timeout=60, check=False)


def ticketflow(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "ticketflow", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_demo_then_unblock(demo_env: dict[str, str]) -> None:
    demo = ticketflow(demo_env, "demo", "--timeout", "120", timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"no Ollama answered at {demo_env['OLLAMA_HOST']}" in demo.stdout
    assert "FAKE Ollama server" in demo.stdout and "no model thinks here" in demo.stdout
    for ticket_id in ("demo-1", "demo-2", "demo-3", "demo-4"):
        assert f"{ticket_id}   DONE" in demo.stdout
    assert "demo-5   BLOCKED" in demo.stdout and "banker's rounding" in demo.stdout
    assert demo.stdout.count("ticketflow/demo-") == 4
    assert "Web UI: http://127.0.0.1:" in demo.stdout

    unblock = ticketflow(demo_env, "unblock", "demo-5", "--guidance", "round half away from zero")
    assert unblock.returncode == 0, unblock.stderr
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline and state != "DONE":
        status = ticketflow(demo_env, "status", "demo-5", "--json")
        state = json.loads(status.stdout)["state"] if status.returncode == 0 else None
        time.sleep(0.5)
    assert state == "DONE"

    again = ticketflow(demo_env, "demo", "--timeout", "60", "--json")
    assert again.returncode == 0, again.stderr
    assert "already submitted (DONE)" in again.stderr  # the narration; stdout is one JSON document
    summary = json.loads(again.stdout)
    assert summary["model_server"]["real_ollama"] is False
    assert {t["state"] for t in summary["tickets"].values()} == {"DONE"}
    assert summary["tickets"]["demo-5"]["pr_url"].endswith("#pull/5")
    dev = json.loads(ticketflow(demo_env, "dev", "--json").stdout)
    assert dev["state"] == "already running" and dev["address"] == demo_env["TICKETFLOW_TEMPORAL_ADDRESS"]
    listing = json.loads(ticketflow(demo_env, "list", "--json").stdout)
    assert sorted(t["ticket_id"] for t in listing) == ["demo-1", "demo-2", "demo-3", "demo-4", "demo-5"]


@pytest.mark.slow
def test_demo_runs_unchanged_on_an_ollama_at_ollama_host(demo_env: dict[str, str]) -> None:
    """Whatever answers Ollama's API at OLLAMA_HOST with the recommended models is used, per stage."""
    models = {"qwen2.5:3b", "qwen2.5-coder:7b", "qwen3:14b"}  # the 14b coder is missing: its fallback serves
    with serve(FakeOllama(models=models, responder=example_backlog_responder)) as ollama:
        env = {**demo_env, "OLLAMA_HOST": ollama.url.removeprefix("http://")}  # as users often set it
        demo = ticketflow(env, "demo", "--timeout", "120", timeout=240)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert f"Using the real Ollama at {ollama.url}" in demo.stdout
        assert "FAKE" not in demo.stdout
        assert demo.stdout.count("ticketflow/demo-") == 4
        asked = {str(r.body.get("model")) for r in ollama.chats()}
        assert asked == models | {"qwen2.5-coder:14b"}  # asked first, answered 404, never served
        result = demo.stdout.split("Result:")[1]  # with the models that served each ticket
        assert "local/qwen2.5-coder:7b" in result and "local/qwen2.5-coder:14b" not in result


def test_demo_names_the_models_to_pull(demo_env: dict[str, str]) -> None:
    with serve(FakeOllama(models={"llama3.2:latest"})) as ollama:
        demo = ticketflow({**demo_env, "OLLAMA_HOST": ollama.url}, "demo", timeout=60)
    assert demo.returncode == 1
    assert "has no model for classify, code, review" in demo.stdout
    assert "ollama pull qwen2.5:3b" in demo.stdout and "--offline" in demo.stdout
    assert not ollama.chats()

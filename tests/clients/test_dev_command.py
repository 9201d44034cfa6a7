"""`ticketflow dev` never mistakes someone else's server for its own, and Web UI links follow ui_port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.pr_body import workflow_url
from activities.settings import Settings
from clients import cli


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server that is not Temporal and was not started by ticketflow."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TICKETFLOW_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TICKETFLOW_CONFIG", os.devnull)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none-temporal.toml"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_port_held_by_another_server_is_refused(
    listener: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{listener}")
    code, out, err = run(capsys, "dev", "--detach")
    assert code == 1 and out == ""
    assert err.startswith(
        f"error: 127.0.0.1:{listener} is already taken by a server `ticketflow dev` did not"
    )
    assert "--use-existing" in err and err.count("\n") == 1
    assert not (tmp_path / "home" / "dev-server.pid").exists()  # nothing was started


def test_use_existing_uses_it(
    listener: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{listener}")
    monkeypatch.setenv("TICKETFLOW_UI_PORT", "9555")
    code, out, _ = run(capsys, "dev", "--use-existing", "--json")
    info = json.loads(out)
    assert code == 0 and info["state"] == "using existing" and info["pid"] is None
    assert info["web_ui"] == "http://localhost:9555"


def test_its_own_server_is_already_running(
    listener: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{listener}")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "dev-server.pid").write_text(str(sleeper.pid))
        code, out, _ = run(capsys, "dev")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (
        code == 0
        and out == f"the dev server is already running on 127.0.0.1:{listener} (pid {sleeper.pid})\n"
    )


def test_a_taken_web_ui_port_is_refused_before_starting(
    listener: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("TICKETFLOW_UI_PORT", str(listener))
    code, _, err = run(capsys, "dev", "--detach")
    assert code == 1 and f"the Web UI port {listener} is taken" in err
    assert not (tmp_path / "home" / "dev-server.pid").exists()


def test_web_ui_links_follow_ui_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETFLOW_UI_PORT", "9555")
    settings = Settings()
    assert settings.ui_url == "http://localhost:9555"
    link = workflow_url(settings.ui_url, settings.namespace, "ticket-PAY-12")  # what PR bodies carry
    assert link == "http://localhost:9555/namespaces/default/workflows/ticket-PAY-12"
    assert Settings(ui_port=9555, ui_url="https://temporal.example").ui_url == "https://temporal.example"
    assert Settings().model_copy().ui_url == "http://localhost:9555"

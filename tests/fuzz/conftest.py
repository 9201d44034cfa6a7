"""Fuzz fixtures: a config whose repository is a real local remote and whose Temporal is unreachable.

Every generated ticket goes as far as it can: a malformed one stops at parsing or validation, a valid one
at the repository check or, past that, at connecting (nothing listens on the configured port), so no
example ever starts a workflow.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import write_config
from clients.example_repo import create_example_remote


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the socket goes


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory with ticketflow.toml: repo `calc` is a real bare remote on disk."""
    home = tmp_path_factory.mktemp("fuzz")
    remote = create_example_remote(home / "remotes" / "calc.git")
    write_config(
        home / "ticketflow.toml",
        {
            "temporal_address": f"127.0.0.1:{closed_port()}",
            "state_dir": str(home / "state"),
            "repo_check_timeout_seconds": 5,
            "metrics_address": "",
            "health_address": "",
            "repos": {"calc": {"url": str(remote)}},
        },
    )
    (home / "tickets").mkdir()
    yield home


@pytest.fixture(scope="module")
def fuzz_env(fuzz_home: Path) -> Iterator[Path]:
    """TICKETFLOW_CONFIG set for the module (hypothesis re-runs a test body; fixtures must outlive it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TICKETFLOW_CONFIG", str(fuzz_home / "ticketflow.toml"))
    for name in ("TICKETFLOW_TEMPORAL_ADDRESS", "TICKETFLOW_REPOS"):
        patch.delenv(name, raising=False)
    yield fuzz_home
    patch.undo()

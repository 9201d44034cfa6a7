"""Real git repositories for activity tests: a bare "remote" holding a tiny Python project."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.settings import Settings
from activities.workspace import WorkspaceActivities
from workflows.contracts import Ticket, Workspace, WorkspaceRequest

CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TEST_CALC = """import unittest

from calc import add, sub


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_sub(self):
        self.assertEqual(sub(5, 3), 2)
"""
README = "# calc\n\nA tiny calculator used by the ticketflow tests.\n"


def git(cwd: Path, *args: str) -> str:
    """Synchronous git for test setup; GIT_* variables of the caller are dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def push_commit(remote: Path, files: dict[str, str], message: str, branch: str = "main") -> str:
    """Commit files on top of branch in the remote (through a scratch clone); returns the new commit."""
    scratch = remote.parent / f"scratch-{message.replace(' ', '-')}"
    git(remote.parent, "clone", "-q", "-b", branch, str(remote), str(scratch))
    write_files(scratch, files)
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", message)
    git(scratch, "push", "-q", "origin", f"HEAD:{branch}")
    return git(scratch, "rev-parse", "HEAD").strip()


@pytest.fixture
def remote_repo(tmp_path: Path) -> Path:
    """A bare repository with a main branch holding calc.py and its unittest suite."""
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    write_files(
        src, {"calc.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": TEST_CALC, "README.md": README}
    )
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "Initial calculator")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(remote))
    return remote


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings needing no Temporal server (unlike the shared `settings` fixture in tests/conftest.py)."""
    # No config file from the developer's machine may leak into the tests.
    monkeypatch.delenv("TICKETFLOW_CONFIG", raising=False)
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))
    return Settings(state_dir=tmp_path / "state", host_id="test-host")


@pytest.fixture
def make_ticket(remote_repo: Path) -> Callable[..., Ticket]:
    def make(ticket_id: str = "T1", **fields: Any) -> Ticket:
        values: dict[str, Any] = {
            "title": f"Improve calc {ticket_id}",
            "body": "Make calc better.",
            "repo": str(remote_repo),
        }
        return Ticket(id=ticket_id, **(values | fields))

    return make


@pytest.fixture
async def workspace(local_settings: Settings, make_ticket: Callable[..., Ticket]) -> Workspace:
    """Ticket T1's prepared worktree."""
    prepare = WorkspaceActivities(local_settings).prepare_workspace
    result: Workspace = await ActivityEnvironment().run(prepare, WorkspaceRequest(ticket=make_ticket()))
    return result

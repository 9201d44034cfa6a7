"""The demo's example repository and agent, created from examples/ in this checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from activities.gitops import COMMIT_IDENTITY
from activities.repos import git_env
from activities.settings import AgentConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class ExamplesMissing(Exception):
    pass


def examples_dir() -> Path:
    if not (EXAMPLES / "repo_template").is_dir():
        raise ExamplesMissing(f"{EXAMPLES} is missing: run the demo from a clone (pip install -e .)")
    return EXAMPLES


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", *COMMIT_IDENTITY, "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=git_env(),
        check=True,
        capture_output=True,
    )


def create_example_remote(dest: Path) -> Path:
    """A bare repository with the example project on main (kept if it already exists)."""
    if (dest / "HEAD").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        seed = Path(scratch) / "seed"
        shutil.copytree(examples_dir() / "repo_template", seed)
        _git(seed, "init", "-q")
        _git(seed, "add", "-A")
        _git(seed, "commit", "-q", "-m", "Initial import of the example project")
        _git(dest.parent, "init", "-q", "--bare", str(dest))
        _git(seed, "push", "-q", str(dest), "HEAD:refs/heads/main")
    return dest


def demo_agent_config() -> AgentConfig:
    return AgentConfig(command=[sys.executable, str(examples_dir() / "agents" / "demo_agent.py")])


def example_tickets() -> list[Path]:
    return sorted((examples_dir() / "backlog").glob("*.md"))

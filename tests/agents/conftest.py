"""Driving agent adapters directly: an AgentRun over a scratch worktree, with fake CLIs from
tests/fakes/agent_streams that print each agent's real stream format."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from activities.agents.base import AgentRun
from activities.settings import AgentConfig
from workflows.contracts import AgentCheckpoint, AgentRequest, Classification, Ticket, Workspace

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "agent_streams"
SESSION = "7d3f1c2a-5b6e-4f80-9a1b-2c3d4e5f6a7b"  # Claude Code takes only UUIDs for --session-id
FAKE_ENV = ["FAKE_AGENT_SCENARIO", "FAKE_AGENT_RESET_IN", "FAKE_AGENT_SILENCE"]


@dataclass
class Harness:
    """One ticket's run directory and worktree; every run() is one attempt of run_agent."""

    root: Path
    checkpoint: AgentCheckpoint = field(default_factory=lambda: AgentCheckpoint(session_id=SESSION))
    lines: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    @property
    def worktree(self) -> Path:
        return self.root / "worktree"

    @property
    def home(self) -> Path:
        return self.root / "runs" / "home"

    def request(self, resume: bool = False) -> AgentRequest:
        ticket = Ticket(id="T-1", title="Add a note", body="Write a note file.", repo="calc")
        workspace = Workspace(
            path=str(self.worktree),
            branch="b",
            base_branch="main",
            base_commit="0" * 40,
            repo_url="x",
            host_queue="q",
            test_command="python -m pytest",
        )
        return AgentRequest(
            ticket=ticket, workspace=workspace, classification=Classification(), resume=resume
        )

    def agent_run(self, resume: bool = False, timeout: float = 30, stall: float | None = None) -> AgentRun:
        async def on_step(description: str) -> None:
            self.steps.append(description)

        return AgentRun(
            request=self.request(resume),
            worktree=self.worktree,
            run_dir=self.root / "runs" / "iter1",
            checkpoint=self.checkpoint,
            on_step=on_step,
            on_line=self.lines.append,
            timeout_seconds=timeout,
            stall_seconds=stall,
            log_path=self.root / "logs" / "run_agent-1-attempt1.log",
        )

    def argvs(self) -> list[list[str]]:
        path = self.home / "fake-agent-argv.jsonl"
        return [json.loads(line)["argv"] for line in path.read_text().splitlines()] if path.exists() else []

    def events(self) -> list[str]:
        """The raw event lines kept for the attempt. Not parsed: redaction masks values it takes for
        secrets even inside JSON (`"output_tokens":***`), which leaves such a line invalid JSON."""
        path = self.root / "logs" / "run_agent-1-attempt1.events.jsonl"
        return path.read_text().splitlines()


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    h.worktree.mkdir()
    (h.root / "logs").mkdir()
    subprocess.run(["git", "init", "-q", str(h.worktree)], check=True)
    return h


def fake_config(kind: str, **changes: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {"kind": kind, "binary": str(FAKES / kind), "pass_env": FAKE_ENV, "sandbox": "off", **changes}
    )

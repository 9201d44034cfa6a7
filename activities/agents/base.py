"""The Agent protocol: anything that edits a worktree towards a ticket and reports one outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workflows.contracts import AgentCheckpoint, AgentRequest, AgentResult

# Called by an agent after each completed step; makes a WIP commit and heartbeats the checkpoint.
StepHook = Callable[[str], Awaitable[None]]
LineHook = Callable[[str], None]


@dataclass
class AgentRun:
    request: AgentRequest
    worktree: Path
    run_dir: Path
    checkpoint: AgentCheckpoint
    on_step: StepHook
    on_line: LineHook
    timeout_seconds: float
    stall_seconds: float | None = None
    # argv -> argv as spawned (the sandbox and rlimits); identity when nothing wraps it.
    wrap: Callable[[list[str]], list[str]] = list
    # The attempt's log; structured agents write their raw events next to it as .events.jsonl.
    log_path: Path | None = None


class Agent(Protocol):
    name: str

    async def run(self, run: AgentRun) -> AgentResult:
        """Work on the ticket in run.worktree; return done / blocked / usage_limit / rate_limited / failed."""
        ...

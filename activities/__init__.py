"""Activities: every piece of I/O a ticket needs. build_activities is the one registration point.

The activity modules are imported inside the builders, not here: importing this package (which every
`import activities.settings` does) stays cheap for the CLI, which reads Settings but runs no activity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activities.settings import Settings


def build_llm_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The activities of policy.llm_queue: model calls that need no worktree."""
    from activities.classify import ClassifyActivities

    return [ClassifyActivities(settings).classify]


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    from activities.agent import AgentActivities
    from activities.checks import CheckActivities
    from activities.classify import ClassifyActivities
    from activities.dependencies import dependency_states
    from activities.intake import IntakeActivities
    from activities.llm.gate_signal import limit_gate_signal
    from activities.pull_request import PullRequestActivities
    from activities.review import ReviewActivities
    from activities.rollback import reset_workspace
    from activities.workspace import WorkspaceActivities
    from activities.writeback import WriteBackActivities

    workspace = WorkspaceActivities(settings)
    return [
        ClassifyActivities(settings).classify,
        dependency_states,
        limit_gate_signal,
        workspace.prepare_workspace,
        workspace.release_workspace,
        AgentActivities(settings).run_agent,
        reset_workspace,
        CheckActivities(settings).run_checks,
        ReviewActivities(settings).review,
        PullRequestActivities(settings).open_pr,
        WriteBackActivities(settings).write_back,
        IntakeActivities(settings).poll_sources,
    ]

"""reset_workspace: put a ticket's worktree back at a checkpoint commit (the rollback)."""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.gitops import clear_stale_index_lock, git, head
from workflows.contracts import ResetRequest, ResetResult


@activity.defn(name="reset_workspace")
async def reset_workspace(req: ResetRequest) -> ResetResult:
    worktree = Path(req.workspace.path)
    if not worktree.is_dir():
        raise ApplicationError(f"worktree {worktree} is missing on this worker", type="WorkspaceMissing")
    await clear_stale_index_lock(worktree)
    # The branch keeps its WIP history in the reflog, so a rollback can itself be undone by hand.
    await git(worktree, "reset", "--hard", "--quiet", req.commit)
    await git(worktree, "clean", "-fdq")
    return ResetResult(head=await head(worktree))

"""The open_pr activity: push the ticket's branch and open (or find) its pull request.

Every step is idempotent, because Temporal retries this activity: a branch that is already pushed is
not pushed again, and a PR that already exists for the branch is returned instead of duplicated.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.githosts import GitHostError, PullRequestSpec, git_host_for
from activities.gitops import GitError, git, head
from activities.heartbeat import with_heartbeats
from activities.pr_body import render_pr_body, workflow_url
from activities.redact import redact
from activities.repos import RepoError, resolve_repo
from activities.settings import Settings
from workflows.contracts import PullRequestRef, PullRequestRequest, workflow_id_for

PUSH_TIMEOUT = 240.0
HEARTBEAT_EVERY = 5.0
_AUTH_MARKERS = ("authentication failed", "could not read username", "permission denied", "403")
_HOST_ERROR_TYPES = {
    "rate_limit": "RateLimited",
    "auth": "AuthFailed",
    "unavailable": "HostUnavailable",
    "rejected": "PullRequestRejected",
}


class PullRequestActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="open_pr")
    async def open_pr(self, req: PullRequestRequest) -> PullRequestRef:
        secrets = self.settings.secret_values()
        try:
            return await self._open(req)
        except RepoError as exc:
            raise ApplicationError(
                redact(str(exc), secrets), type="RepoNotFound", non_retryable=True
            ) from None
        except GitHostError as exc:
            raise host_failure(exc, secrets) from None
        except GitError as exc:
            raise push_failure(exc, secrets) from None

    async def _open(self, req: PullRequestRequest) -> PullRequestRef:
        repo = resolve_repo(req.ticket.repo, self.settings)
        host = git_host_for(repo, self.settings)
        worktree = Path(req.workspace.path)
        await require_commits(worktree, req.workspace.base_commit)
        await with_heartbeats(
            push_branch(worktree, repo.url, req.workspace.branch, host.push_env()), HEARTBEAT_EVERY, "push"
        )
        activity.heartbeat("open")
        return await host.open_pr(self.spec(req))

    def spec(self, req: PullRequestRequest) -> PullRequestSpec:
        secrets = self.settings.secret_values()
        link = workflow_url(
            self.settings.ui_url, self.settings.namespace, req.workflow_id or workflow_id_for(req.ticket.id)
        )
        return PullRequestSpec(
            title=redact(req.ticket.title, secrets),
            body=redact(render_pr_body(req, link), secrets),
            head=req.workspace.branch,
            base=req.workspace.base_branch,
            # Failing tests still get a PR, so a human sees the work, but not one that looks ready to merge.
            draft=req.checks is not None and not req.checks.passed,
            labels=tuple(req.ticket.labels),
        )


async def require_commits(worktree: Path, base_commit: str) -> None:
    count = int((await git(worktree, "rev-list", "--count", f"{base_commit}..HEAD")).strip() or 0)
    if count == 0:
        raise ApplicationError(
            f"no commits between {base_commit[:12]} and HEAD: nothing to propose",
            type="NothingToPush",
            non_retryable=True,
        )


async def push_branch(worktree: Path, url: str, branch: str, env: dict[str, str]) -> None:
    """Make refs/heads/<branch> on url equal HEAD; a no-op when an earlier attempt already did."""
    ref = f"refs/heads/{branch}"
    local = await head(worktree)
    listing = await git(worktree, "ls-remote", "--", url, ref, env=env, timeout=PUSH_TIMEOUT)
    remote = next((line.split()[0] for line in listing.splitlines() if line.endswith(f"\t{ref}")), "")
    if remote == local:
        return
    # The branch is this ticket's alone, so a resumed agent may rewrite it; the lease only overwrites
    # the commit we just saw, never someone else's concurrent push.
    await git(
        worktree,
        "push",
        "--quiet",
        f"--force-with-lease={ref}:{remote}",
        "--",
        url,
        f"HEAD:{ref}",
        env=env,
        timeout=PUSH_TIMEOUT,
    )


def host_failure(exc: GitHostError, secrets: list[str]) -> ApplicationError:
    delay = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else None
    return ApplicationError(
        redact(str(exc), secrets),
        type=_HOST_ERROR_TYPES[exc.kind],
        non_retryable=not exc.retryable,
        next_retry_delay=delay if exc.retryable else None,
        # Waiting out a rate limit is expected operation, not an error worth alerting on.
        category=ApplicationErrorCategory.BENIGN
        if exc.kind == "rate_limit"
        else ApplicationErrorCategory.UNSPECIFIED,
    )


def push_failure(exc: GitError, secrets: list[str]) -> ApplicationError:
    message = redact(str(exc), secrets)
    if any(marker in exc.stderr.lower() for marker in _AUTH_MARKERS):
        return ApplicationError(message, type="AuthFailed", non_retryable=True)
    return ApplicationError(message, type="PushFailed")

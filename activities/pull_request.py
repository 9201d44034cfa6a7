"""The open_pr activity: push the ticket's work as one commit and open (or find) its pull request.

What is pushed is never the checkpoint history: open_pr writes one squashed commit (the tree of HEAD,
parent the base commit, a message of ticketflow's: the ticket title and id, redacted) and pushes that
to the branch on the remote. Checkpoints stay in the local mirror's ticket branch, which is never
rewritten, so a secret an agent wrote and removed between checkpoints never leaves the host. Before
the push, exactly what is about to be pushed (the squashed commit's diff and message) is scanned for
secrets; a finding, or a scan that fails, refuses the push for good (SecretsInPush).

Every step is idempotent, because Temporal retries this activity: the squashed commit is the same
object for the same HEAD (fixed identity, dates taken from HEAD), a branch that already points at it is
not pushed again, and a PR that already exists for the branch is returned instead of duplicated.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import secrets_scan
from activities.githosts import GitHostError, PullRequestSpec, git_host_for
from activities.gitops import COMMIT_IDENTITY, GitError, git, head
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
        base = req.workspace.base_commit
        await require_commits(worktree, base)
        message = squash_message(req.ticket.title, req.ticket.id, self.settings.secret_values())
        commit = await squash_commit(worktree, base, message)
        await refuse_secrets(worktree, base, commit)
        await with_heartbeats(
            push_branch(worktree, repo.url, req.workspace.branch, host.push_env(), commit),
            HEARTBEAT_EVERY,
            "push",
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


SQUASH_NAME = "ticketflow"
SQUASH_EMAIL = "ticketflow@localhost"


def squash_message(title: str, ticket_id: str, secrets: list[str]) -> str:
    """The pushed commit's message: ticketflow's words only, never an agent's checkpoint messages."""
    subject = " ".join(redact(title, secrets).split()) or "ticketflow change"
    return f"{subject}\n\nTicket: {redact(ticket_id, secrets)}\n"


async def squash_commit(worktree: Path, base_commit: str, message: str) -> str:
    """One commit with HEAD's tree on base_commit; the same object for the same HEAD and message.

    Identity and both dates are fixed (the dates are HEAD's committer date), so a retried open_pr makes
    exactly the commit an earlier attempt pushed and finds the branch already there.
    """
    tree = (await git(worktree, "rev-parse", "--verify", "HEAD^{tree}")).strip()
    when = (await git(worktree, "log", "-1", "--no-show-signature", "--format=%ct", "HEAD", "--")).strip()
    stamp = f"{int(when)} +0000"
    env = {
        "GIT_AUTHOR_NAME": SQUASH_NAME,
        "GIT_AUTHOR_EMAIL": SQUASH_EMAIL,
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_NAME": SQUASH_NAME,
        "GIT_COMMITTER_EMAIL": SQUASH_EMAIL,
        "GIT_COMMITTER_DATE": stamp,
    }
    out = await git(
        worktree, *COMMIT_IDENTITY, "commit-tree", tree, "-p", base_commit, "-m", message, env=env
    )
    return out.strip()


async def refuse_secrets(worktree: Path, base_commit: str, commit: str) -> None:
    """Scan exactly what the push would carry; refuse for good on a finding or on a failed scan."""
    diff = await git(
        worktree,
        "-c",
        "core.quotePath=false",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        base_commit,
        commit,
        "--",
    )
    message = await git(worktree, "log", "-1", "--no-show-signature", "--format=%B", commit, "--")
    try:
        hits = await asyncio.to_thread(secrets_scan.scan_diff, diff)
        hits += await asyncio.to_thread(secrets_scan.scan_text, message)
    except Exception as exc:
        raise ApplicationError(
            f"refusing to push {commit[:12]}: the secrets scan failed ({type(exc).__name__})",
            type="SecretsInPush",
            non_retryable=True,
        ) from None
    if hits:
        places = sorted({f"{h.kind} at {h.where() if h.file else 'message ' + h.where()}" for h in hits})
        shown = "; ".join(places[:5]) + (f"; {len(places) - 5} more" if len(places) > 5 else "")
        raise ApplicationError(
            f"refusing to push {commit[:12]}: possible secrets in what would be pushed: {shown}",
            type="SecretsInPush",
            non_retryable=True,
        )


async def push_branch(worktree: Path, url: str, branch: str, env: dict[str, str], commit: str = "") -> None:
    """Make refs/heads/<branch> on url equal commit (default HEAD); a no-op when an earlier attempt did."""
    ref = f"refs/heads/{branch}"
    local = commit or await head(worktree)
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
        f"{local}:{ref}",
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

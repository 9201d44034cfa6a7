"""The review activity: rule-based findings about the diff between the base commit and the branch HEAD.

The agent activity commits its work as WIP commits, so `<base>...HEAD` is exactly what a PR would show.
The secrets scan (activities/secrets_scan.py) reads more than that: the net diff, and each commit of
`<base>..HEAD` on its own (its diff and its message), so a secret added in one checkpoint and removed in
the next is still named (review_rules.secret_findings says what blocks).
With a `review` model chain configured, a model reviews the same diff too (structured output) and its
findings join the rule-based ones; the rules and the secret scan always run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from activities import review_rules as rules
from activities import secrets_scan
from activities.checks import require_worktree
from activities.gitops import git
from activities.heartbeat import with_heartbeats
from activities.llm.budget import shrink_text
from activities.llm.chains import ModelRef, stage_chain, structured_stage
from activities.llm.structured import schema_instruction
from activities.redact import redact
from activities.settings import Settings
from workflows.contracts import Finding, ReviewReport, ReviewRequest, Ticket

# Explicit options so a user's git config (noprefix, external diff tools, textconv) cannot change
# what the parsers see; quotePath=false keeps non-ASCII paths readable in the patch headers.
_DIFF = (
    "-c",
    "core.quotePath=false",
    "diff",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "-M",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)


async def _diff(path: Path, base: str, *options: str) -> str:
    return await git(path, *_DIFF, *options, f"{base}...HEAD", "--")


async def _added_sizes(path: Path, changes: list[rules.FileChange]) -> dict[str, int]:
    if not any(c.status in "AC" for c in changes):
        return {}
    return rules.parse_tree_sizes(await git(path, "ls-tree", "-r", "-l", "-z", "HEAD"))


async def branch_commits(path: Path, base: str) -> list[str]:
    """The commits of base..HEAD, oldest first."""
    return (await git(path, "rev-list", "--reverse", f"{base}..HEAD", "--")).split()


async def commit_diff(path: Path, sha: str) -> str:
    """One commit's own change: against its first parent."""
    return await git(path, *_DIFF, f"{sha}^", sha, "--")


async def commit_message(path: Path, sha: str) -> str:
    return await git(path, "log", "-1", "--no-show-signature", "--format=%B", sha, "--")


def _scan_commit(sha: str, diff: str, message: str) -> rules.CommitHits:
    return rules.CommitHits(sha[:12], secrets_scan.scan_diff(diff), secrets_scan.scan_text(message))


async def _secret_findings(path: Path, base: str, diff: str) -> list[Finding]:
    commits = [
        (sha, await commit_diff(path, sha), await commit_message(path, sha))
        for sha in await branch_commits(path, base)
    ]
    try:
        net = await asyncio.to_thread(secrets_scan.scan_diff, diff)
        scanned = [await asyncio.to_thread(_scan_commit, *commit) for commit in commits]
        return rules.secret_findings(net, scanned)
    except Exception as exc:
        # Fail closed: a diff we could not scan must not reach a PR unreviewed.
        message = f"secret scan failed ({type(exc).__name__}); inspect the diff by hand"
        return [Finding(severity="critical", rule="secret-scan", message=message)]


async def _added_lines(diff: str) -> list[rules.AddedLine]:
    try:
        return await asyncio.to_thread(rules.added_lines, diff)
    except Exception:
        return []  # an unparsable diff is already reported, critically, by the secret scan


async def review_worktree(path: Path, base: str) -> ReviewReport:
    diff = await _diff(path, base)
    stat = rules.parse_numstat(await _diff(path, base, "--numstat", "-z"))
    changes = rules.parse_name_status(await _diff(path, base, "--name-status", "-z"))
    sizes = await _added_sizes(path, changes)
    lines = await _added_lines(diff)
    secrets = await _secret_findings(path, base, diff)
    findings = [*secrets, *rules.review_findings(stat, changes, sizes, lines)]
    return ReviewReport(
        findings=rules.by_severity(findings),
        files_changed=stat.files,
        insertions=stat.insertions,
        deletions=stat.deletions,
        model=None,  # rule-based until the LLM review lands
    )


class ModelFinding(BaseModel):
    model_config = ConfigDict(extra="ignore")

    severity: Literal["info", "low", "medium", "high", "critical"]
    message: str
    file: str | None = None
    line: int | None = None


class ModelReview(BaseModel):
    """What the model must answer: findings (critical = must be fixed before a PR) and a summary."""

    model_config = ConfigDict(extra="ignore")

    findings: list[ModelFinding] = Field(default_factory=list)
    summary: str = ""


_SYSTEM = (
    "You review a diff written by a coding agent for the ticket below. Report real problems only: bugs, "
    "missing tests for new behaviour, security issues, changes unrelated to the ticket. Use severity "
    "critical only for problems that must be fixed before the change can be merged. "
)
MAX_MODEL_FINDINGS = 20


def review_messages(ticket: Ticket, diff: str, shrink: int) -> list[dict[str, Any]]:
    user = (
        f"Ticket: {ticket.title}\n\n{shrink_text(ticket.body, shrink)}\n\n"
        f"Diff:\n{shrink_text(diff, shrink + 1 if shrink else 0)}"
    )
    return [
        {"role": "system", "content": _SYSTEM + schema_instruction(ModelReview)},
        {"role": "user", "content": user},
    ]


class ReviewActivities:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="review")
    async def review(self, req: ReviewRequest) -> ReviewReport:
        path = require_worktree(req.workspace)
        report = await with_heartbeats(review_worktree(path, req.workspace.base_commit), 5.0, "reviewing")
        chain = stage_chain(self._settings, "review", req.ticket)
        if not chain:
            return report
        return await with_heartbeats(self._model_review(req, path, report, chain), 5.0, "model review")

    async def _model_review(
        self, req: ReviewRequest, path: Path, report: ReviewReport, chain: list[ModelRef]
    ) -> ReviewReport:
        # The model may be a remote API: what it reads is masked like anything else that leaves.
        diff = redact(await _diff(path, req.workspace.base_commit), self._settings.secret_values())
        result = await structured_stage(
            self._settings,
            chain,
            lambda shrink: review_messages(req.ticket, diff, shrink),
            ModelReview,
            attempt=activity.info().attempt,
        )
        found = [
            Finding(
                severity=f.severity, rule="model-review", message=f.message[:500], file=f.file, line=f.line
            )
            for f in result.value.findings[:MAX_MODEL_FINDINGS]
        ]
        return report.model_copy(
            update={
                "findings": rules.by_severity([*report.findings, *found]),
                "model": result.served_by.label,
                "tokens": result.tokens,
            }
        )

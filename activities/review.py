"""The review activity: rule-based findings about the diff between the base commit and the branch HEAD.

The agent activity commits its work as WIP commits, so `<base>...HEAD` is exactly what a PR would show.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity

from activities import review_rules as rules
from activities.checks import require_worktree
from activities.gitops import git
from activities.heartbeat import with_heartbeats
from activities.settings import Settings
from workflows.contracts import Finding, ReviewReport, ReviewRequest

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


async def _secret_findings(diff: str) -> list[Finding]:
    try:
        return await asyncio.to_thread(rules.scan_secrets, diff)
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
    findings = [*await _secret_findings(diff), *rules.review_findings(stat, changes, sizes, lines)]
    return ReviewReport(
        findings=rules.by_severity(findings),
        files_changed=stat.files,
        insertions=stat.insertions,
        deletions=stat.deletions,
        model=None,  # rule-based until the LLM review lands
    )


class ReviewActivities:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="review")
    async def review(self, req: ReviewRequest) -> ReviewReport:
        path = require_worktree(req.workspace)
        return await with_heartbeats(review_worktree(path, req.workspace.base_commit), 5.0, "reviewing")

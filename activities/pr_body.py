"""The pull request description: what was asked, what was done, and how it was checked.

Pure functions over the open_pr request, so the text is unit-tested without git or a host. The caller
redacts the result; nothing here looks at secrets.
"""

from __future__ import annotations

import re

from workflows.contracts import (
    UNTESTED_LABEL,
    CheckOutcome,
    CheckReport,
    PullRequestRequest,
    ReviewReport,
    TokenUsage,
)

EXCERPT_CHARS = 800
OUTPUT_TAIL_LINES = 30


def workflow_url(ui_url: str, namespace: str, workflow_id: str) -> str:
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id}"


def render_pr_body(req: PullRequestRequest, ui_link: str) -> str:
    sections = [
        _summary(req),
        _tests(req.checks),
        _review(req.review),
        _run(req.models_used, req.tokens, req.iterations, ui_link),
        f"Ticket: {req.ticket.id}" + (f" · Trace: `{req.trace_id}`" if req.trace_id else ""),
    ]
    return "\n\n".join(sections) + "\n"


def _summary(req: PullRequestRequest) -> str:
    body = req.ticket.body.strip()
    excerpt = body if len(body) <= EXCERPT_CHARS else body[:EXCERPT_CHARS].rstrip() + " …"
    quoted = "\n".join(f"> {line}".rstrip() for line in excerpt.splitlines())
    c = req.classification
    return (
        f"## Summary\n\n**{req.ticket.title}**\n\n{quoted}\n\n"
        f"Classification: {c.kind}, complexity {c.complexity}, risk {c.risk}"
    )


_VERDICTS = {
    CheckOutcome.PASSED: "passed",
    CheckOutcome.FAILED: "FAILED",
    CheckOutcome.TIMED_OUT: "timed out",
    CheckOutcome.NO_TESTS: "NO TESTS RAN",
    CheckOutcome.NO_COMMAND: "NO TEST COMMAND",
    CheckOutcome.ENV_ERROR: "ENVIRONMENT ERROR",
}


def counts_text(checks: CheckReport) -> str:
    """ "3 passed, 1 failed, 0 skipped" from the runner's own report, or why there are none."""
    counts = [
        f"{n} {label}"
        for n, label in (
            (checks.passed_count, "passed"),
            (checks.failed_count, "failed"),
            (checks.skipped_count, "skipped"),
        )
        if n is not None
    ]
    if not counts:
        return "unknown (the runner's output has no count we can read)"
    source = {"junit": " (JUnit report)", "summary": " (summary line)"}.get(checks.counts_from or "", "")
    return ", ".join(counts) + source


def _tests(checks: CheckReport | None) -> str:
    if checks is None:
        return "## Tests\n\nNo test report."
    outcome = checks.verdict
    lines = ["## Tests", ""]
    if checks.untested:
        why = (checks.reason or "no test ran").rstrip(".")
        lines += [
            f"> **Untested.** {why}. This pull request is a draft labelled `{UNTESTED_LABEL}`: nothing "
            "here has been checked by tests.",
            "",
        ]
    source = f" ({checks.command_source}: {checks.command_reason})" if checks.command_source else ""
    lines += [
        f"Command: `{checks.command}`{source}",
        f"Result: **{_VERDICTS[outcome]}** (exit code {checks.exit_code}, {checks.duration_seconds:.1f}s)",
    ]
    if outcome is not CheckOutcome.NO_COMMAND:
        lines.append(f"Counts: {counts_text(checks)}")
    if checks.first_failure:
        lines.append(f"First failing test: `{checks.first_failure}`")
    if checks.environment:
        lines.append(f"Environment: {checks.environment}")
    if not checks.passed and checks.output_tail.strip():
        tail = "\n".join(checks.output_tail.strip().splitlines()[-OUTPUT_TAIL_LINES:])
        lines += ["", "<details><summary>Output (last lines)</summary>", "", _fence(tail), "", "</details>"]
    return "\n".join(lines)


def _review(review: ReviewReport | None) -> str:
    if review is None:
        return "## Review\n\nNo review report."
    stats = f"{review.files_changed} files changed, +{review.insertions} -{review.deletions}"
    if not review.findings:
        return f"## Review\n\n{stats}. No findings."
    rows = ["| Severity | Rule | Location | Message |", "| --- | --- | --- | --- |"]
    for f in review.findings:
        location = f"{f.file}:{f.line}" if f.file and f.line else (f.file or "")
        rows.append(f"| {f.severity} | {_cell(f.rule)} | {_cell(location)} | {_cell(f.message)} |")
    return f"## Review\n\n{stats}.\n\n" + "\n".join(rows)


def _run(models: list[str], tokens: TokenUsage, iterations: int, ui_link: str) -> str:
    return "\n".join(
        [
            "## Run",
            "",
            f"- Models: {', '.join(models) if models else 'none recorded'}",
            f"- Tokens: {tokens.total:,} ({tokens.prompt:,} prompt, {tokens.completion:,} completion),"
            f" cost ${tokens.cost_usd:.4f}",
            f"- Iterations: {iterations}",
            f"- Workflow: [{ui_link}]({ui_link})",
        ]
    )


def _cell(text: str) -> str:
    """One table cell: a pipe or a newline would end the cell or the row."""
    return " ".join(text.split()).replace("|", "\\|")


def _fence(text: str) -> str:
    # The fence must be longer than any backtick run inside, or the output could close it early.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"

"""The pull request description: what was asked, what was done, and how it was checked.

Pure functions over the open_pr request, so the text is unit-tested without git or a host. The caller
redacts the result; nothing here looks at secrets.
"""

from __future__ import annotations

import re

from workflows.contracts import CheckReport, PullRequestRequest, ReviewReport, TokenUsage

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


def _tests(checks: CheckReport | None) -> str:
    if checks is None:
        return "## Tests\n\nNo test report."
    verdict = "passed" if checks.passed else ("timed out" if checks.timed_out else "FAILED")
    counts = [
        f"{n} {label}"
        for n, label in (
            (checks.passed_count, "passed"),
            (checks.failed_count, "failed"),
            (checks.skipped_count, "skipped"),
        )
        if n is not None
    ]
    lines = [
        "## Tests",
        "",
        f"Command: `{checks.command}`",
        f"Result: **{verdict}** (exit code {checks.exit_code}, {checks.duration_seconds:.1f}s)",
    ]
    if counts:
        lines.append(f"Counts: {', '.join(counts)}")
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

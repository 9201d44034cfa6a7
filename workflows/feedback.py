"""What the agent is told when its work did not pass: pure text builders, safe in workflow code."""

from __future__ import annotations

from workflows.contracts import CheckOutcome, CheckReport, ReviewReport

MAX_FEEDBACK_CHARS = 6000


def check_feedback(report: CheckReport) -> str:
    head = f"The checks failed: `{report.command}`"
    if report.timed_out:
        head += " timed out"
    elif report.exit_code is not None:
        head += f" exited {report.exit_code}"
    if report.failed_count is not None:
        head += f" ({report.failed_count} failed, {report.passed_count or 0} passed)"
    lines = [f"{head}."]
    if report.first_failure:
        lines.append(f"First failing test: {report.first_failure}")
    if report.outcome is not None and report.outcome is not CheckOutcome.FAILED and report.reason:
        lines.append(f"Why: {report.reason}")
    tail = report.output_tail[-MAX_FEEDBACK_CHARS:]
    lines.append(f"Fix the code so they pass. Output (tail):\n{tail}")
    return "\n".join(lines)


def review_feedback(report: ReviewReport) -> str:
    lines = ["The review blocked the change. Fix these findings:"]
    for finding in report.findings:
        if finding.severity in ("critical", "high"):
            where = f"{finding.file}:{finding.line}" if finding.file and finding.line else finding.file or "-"
            lines.append(f"- [{finding.severity}] {finding.rule} at {where}: {finding.message}")
    return "\n".join(lines)[:MAX_FEEDBACK_CHARS]

"""The PR description is pure text over the request: every section, escaping, and bounds."""

from __future__ import annotations

from activities.pr_body import EXCERPT_CHARS, render_pr_body, workflow_url
from workflows.contracts import (
    CheckOutcome,
    CheckReport,
    Classification,
    Finding,
    PullRequestRequest,
    ReviewReport,
    Ticket,
    TokenUsage,
    Workspace,
)

LINK = "http://ui:8233/namespaces/default/workflows/ticket-T-1"


def req(**fields: object) -> PullRequestRequest:
    ticket = Ticket(id="T-1", title="Fix login", body="The login form rejects valid emails.", repo="r")
    workspace = Workspace(
        path="/w", branch=ticket.branch, base_branch="main", base_commit="abc", repo_url="r", host_queue="q"
    )
    base = {
        "ticket": ticket,
        "workspace": workspace,
        "classification": Classification(kind="bugfix", complexity="low", risk="medium"),
    }
    return PullRequestRequest.model_validate({**base, **fields})


def test_every_section_is_present() -> None:
    body = render_pr_body(
        req(
            checks=CheckReport(
                passed=True,
                command="pytest -q",
                exit_code=0,
                passed_count=10,
                failed_count=0,
                skipped_count=1,
                duration_seconds=3.25,
            ),
            review=ReviewReport(
                files_changed=2,
                insertions=10,
                deletions=3,
                findings=[
                    Finding(severity="low", rule="style/naming", message="rename x", file="app.py", line=4)
                ],
            ),
            models_used=["qwen2.5-coder:7b", "llama3.2:3b"],
            tokens=TokenUsage(prompt=1200, completion=300, cost_usd=0.0123),
            iterations=2,
        ),
        LINK,
    )

    assert "**Fix login**" in body and "> The login form rejects valid emails." in body
    assert "Classification: bugfix, complexity low, risk medium" in body
    assert "Command: `pytest -q`" in body and "Result: **passed** (exit code 0, 3.2s)" in body
    assert "Counts: 10 passed, 0 failed, 1 skipped" in body
    assert "2 files changed, +10 -3" in body
    assert "| low | style/naming | app.py:4 | rename x |" in body
    assert "- Models: qwen2.5-coder:7b, llama3.2:3b" in body
    assert "- Tokens: 1,500 (1,200 prompt, 300 completion), cost $0.0123" in body
    assert "- Iterations: 2" in body and f"[{LINK}]({LINK})" in body
    assert body.rstrip().endswith("Ticket: T-1")


def test_missing_reports_are_said_plainly() -> None:
    body = render_pr_body(req(), LINK)
    assert "No test report." in body and "No review report." in body and "none recorded" in body


def test_failed_checks_show_the_output_tail_in_a_safe_fence() -> None:
    output = "\n".join(f"line {i}" for i in range(100)) + "\n``` sneaky fence"
    body = render_pr_body(
        req(checks=CheckReport(passed=False, command="make test", exit_code=2, output_tail=output)), LINK
    )
    assert "**FAILED**" in body and "line 99" in body and "line 5\n" not in body
    assert "````text" in body


def test_table_cells_cannot_break_the_table() -> None:
    finding = Finding(severity="high", rule="a|b", message="two\nlines | pipe", file="x.py")
    body = render_pr_body(req(review=ReviewReport(findings=[finding])), LINK)
    assert "| high | a\\|b | x.py | two lines \\| pipe |" in body


def test_long_ticket_bodies_are_excerpted() -> None:
    long = req()
    long.ticket.body = "word " * 1000
    body = render_pr_body(long, LINK)
    assert "…" in body and body.count("word") < EXCERPT_CHARS // 4


def test_workflow_url() -> None:
    assert (
        workflow_url("http://ui:8233/", "prod", "ticket-T-1")
        == "http://ui:8233/namespaces/prod/workflows/ticket-T-1"
    )


def test_an_untested_pr_says_so_and_how_the_command_was_chosen() -> None:
    checks = CheckReport(
        passed=False,
        command="python -m pytest -q",
        exit_code=5,
        passed_count=0,
        failed_count=0,
        skipped_count=0,
        counts_from="junit",
        outcome=CheckOutcome.NO_TESTS,
        command_source="detected",
        command_reason="pytest: named in pyproject.toml",
        reason="pytest collected no tests (exit 5)",
        tests_required=False,
    )
    body = render_pr_body(req(checks=checks), LINK)
    assert "> **Untested.** pytest collected no tests (exit 5)." in body and "`untested`" in body
    assert "Command: `python -m pytest -q` (detected: pytest: named in pyproject.toml)" in body
    assert "Result: **NO TESTS RAN** (exit code 5" in body
    assert "Counts: 0 passed, 0 failed, 0 skipped (JUnit report)" in body


def test_failed_checks_name_the_first_failing_test() -> None:
    checks = CheckReport(
        passed=False,
        command="cargo test",
        exit_code=101,
        outcome=CheckOutcome.FAILED,
        first_failure="tests::adds",
        environment="no project environment: the runner comes from the worker's PATH",
    )
    body = render_pr_body(req(checks=checks), LINK)
    assert "First failing test: `tests::adds`" in body and "Untested" not in body
    assert "Counts: unknown" in body

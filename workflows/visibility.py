"""What operators see in the Web UI: typed search attributes and the live 'current details' text."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

from workflows.contracts import TicketState, TicketStatus

TICKET_STATE = SearchAttributeKey.for_keyword("TicketState")
TICKET_STAGE = SearchAttributeKey.for_keyword("TicketStage")
TICKET_PRIORITY = SearchAttributeKey.for_int("TicketPriority")
TICKET_REPO = SearchAttributeKey.for_keyword("TicketRepo")

SEARCH_ATTRIBUTES: list[SearchAttributeKey[Any]] = [TICKET_STATE, TICKET_STAGE, TICKET_PRIORITY, TICKET_REPO]


def unblock_command(ticket_id: str) -> str:
    return f'ticketflow unblock {ticket_id} --guidance "<what the agent should do>"'


def render_details(status: TicketStatus) -> str:
    """Markdown for workflow.set_current_details: what the ticket is doing now, and how to move it on."""
    lines = [f"**State:** {status.state.value}"]
    if status.stage is not None:
        lines.append(
            f"**Stage:** {status.stage.value} (iteration {status.iteration}/{status.max_iterations})"
        )
    if status.waiting_on:
        lines.append(f"**Waiting for:** {', '.join(status.waiting_on)}")
    if status.models_used:
        lines.append(f"**Models:** {', '.join(status.models_used)}")
    checks = status.last_checks
    command = checks.command if checks else status.test_command
    source = checks.command_source if checks else status.test_command_source
    if command:
        lines.append(f"**Tests:** `{command}`" + (f" ({source})" if source else ""))
    if checks is not None:
        counts = ", ".join(
            f"{n} {label}"
            for n, label in ((checks.passed_count, "passed"), (checks.failed_count, "failed"))
            if n is not None
        )
        first = f"; first failing: `{checks.first_failure}`" if checks.first_failure else ""
        lines.append(
            f"**Last test run:** {checks.verdict.value}" + (f" ({counts})" if counts else "") + first
        )
    if status.state is TicketState.BLOCKED:
        lines.append(f"**Blocked:** {status.blocked_reason}")
        lines.append(f"**To unblock:** `{status.unblock_command}`")
        lines.append(f"**Or retry the stage:** `ticketflow retry {status.ticket_id}`")
    if status.state is TicketState.WAITING_FOR_LIMIT and status.waiting_until:
        lines.append(f"**Waiting for a usage limit until:** {status.waiting_until.isoformat()}")
    if status.state is TicketState.WAITING_FOR_MODEL and status.waiting_until:
        lines.append(f"**Model server down; trying again at:** {status.waiting_until.isoformat()}")
    if status.state is TicketState.AWAITING_APPROVAL:
        lines.append(f"**To approve:** `ticketflow approve {status.ticket_id}`")
    if status.pr_url:
        lines.append(f"**PR:** {status.pr_url}")
    if status.last_output:
        lines.append("**Last agent output:**")
        lines.append("```\n" + "\n".join(status.last_output[-5:]) + "\n```")
    return "\n\n".join(lines)

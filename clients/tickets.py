"""Client-side ticket operations: submit, look up, answer and retry tickets through Temporal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities import project_env
from activities.llm.chains import providers_for
from activities.repos import RepoError, check_reachable, resolve_repo
from activities.settings import Settings
from workflows import policy, visibility
from workflows.contracts import (
    Ack,
    ApproveRequest,
    CancelRequest,
    RetryRequest,
    RollbackRequest,
    RunOptions,
    Stage,
    Ticket,
    TicketRun,
    TicketState,
    TicketStatus,
    UnblockRequest,
    workflow_id_for,
)
from workflows.ticket import TicketWorkflow

SUMMARY_LIMIT = 400  # bytes: Temporal's static summary limit


class TicketOperationError(Exception):
    """A user-facing failure; the message says what is wrong and what to do."""


@dataclass
class SubmitResult:
    ticket_id: str
    workflow_id: str
    started: bool
    existing_state: str | None = None
    existing_status: str | None = None


@dataclass
class TicketSummary:
    ticket_id: str
    workflow_id: str
    title: str
    state: str
    stage: str | None
    priority: int | None
    repo: str | None
    status: str
    started: datetime | None
    closed: datetime | None = None  # when the workflow closed (DONE, FAILED, CANCELLED, ...)


def run_options(settings: Settings, ticket: Ticket) -> TicketRun:
    options = RunOptions(
        reminder_interval_seconds=settings.reminder_interval_seconds,
        blocked_timeout_seconds=settings.blocked_timeout_seconds,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        require_approval=settings.require_approval,
        history_event_limit=settings.history_event_limit,
        checks_timeout_seconds=settings.checks_timeout_seconds,
        dependency_poll_seconds=settings.dependency_poll_seconds,
        notify=bool(settings.notify),
        ui_url=settings.ui_url,
        model_providers=model_providers(settings, ticket),
        model_down_first_wait_seconds=settings.model_down_first_wait_seconds,
        model_down_max_wait_seconds=settings.model_down_max_wait_seconds,
    )
    return TicketRun(ticket=ticket, options=options)


def model_providers(settings: Settings, ticket: Ticket) -> dict[str, list[str]]:
    """The providers each model-backed stage may call: the limit gates the ticket passes first."""
    stages = ["classify", "review"]
    agent = settings.agents.get(ticket.agent or settings.default_agent)
    if agent is not None and agent.kind == "ollama":
        stages.append("code")
    found = {stage: providers_for(settings, stage, ticket) for stage in stages}
    return {stage: providers for stage, providers in found.items() if providers}


async def validate_repo(ticket: Ticket, settings: Settings) -> Ticket:
    """Reject a ticket whose repository is unknown or unreachable before anything starts."""
    try:
        repo = resolve_repo(ticket.repo, settings)
        if repo.base_branch and "base_branch" not in ticket.model_fields_set:
            ticket = ticket.model_copy(update={"base_branch": repo.base_branch})
        await check_reachable(repo, ticket.base_branch, settings.repo_check_timeout_seconds)
    except RepoError as exc:
        raise TicketOperationError(f"ticket {ticket.id}: {exc}") from exc
    # A test command naming a path the test sandbox cannot show is refused now, not after the agent ran.
    command = ticket.test_command or repo.test_command
    problem = project_env.command_path_problem(command, settings) if command else None
    if problem is not None:
        raise TicketOperationError(f"ticket {ticket.id}: test_command: {problem}")
    return ticket


def test_command_note(ticket: Ticket, settings: Settings) -> str:
    """What submit can say about a ticket's test command before its worktree exists."""
    if ticket.test_command:
        return f"tests: `{ticket.test_command}` (from the ticket)"
    cfg = settings.repos.get(ticket.repo)
    if cfg is not None and cfg.test_command:
        return f"tests: `{cfg.test_command}` (configured: [repos.{ticket.repo}] test_command)"
    return "tests: detected when its worktree is prepared (`ticketflow status` shows the command and why)"


def _truncate_bytes(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "..."


def _details(ticket: Ticket) -> str:
    labels = ", ".join(ticket.labels) or "-"
    return (
        f"**Ticket:** {ticket.id}  \n**Repo:** {ticket.repo} ({ticket.base_branch})  \n"
        f"**Priority:** {ticket.priority}  \n**Labels:** {labels}\n\n{_truncate_bytes(ticket.body, 15000)}"
    )


async def submit(
    client: Client, settings: Settings, ticket: Ticket, *, check_repo: bool = True
) -> SubmitResult:
    """Start the ticket's workflow once; a second submit reports the existing run instead."""
    if check_repo:
        ticket = await validate_repo(ticket, settings)
    workflow_id = workflow_id_for(ticket.id)
    try:
        await _start(client, settings, run_options(settings, ticket), WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        existing = await describe(client, ticket.id)
        return SubmitResult(ticket.id, workflow_id, False, existing.state, existing.status)
    return SubmitResult(ticket.id, workflow_id, True)


async def _start(client: Client, settings: Settings, run: TicketRun, reuse: WorkflowIDReusePolicy) -> None:
    ticket = run.ticket
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(visibility.TICKET_STATE, TicketState.QUEUED.value),
            SearchAttributePair(visibility.TICKET_PRIORITY, ticket.priority),
            SearchAttributePair(visibility.TICKET_REPO, ticket.repo),
        ]
    )
    await client.start_workflow(
        TicketWorkflow.run,
        run,
        id=workflow_id_for(ticket.id),
        task_queue=settings.task_queue,
        id_reuse_policy=reuse,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=attributes,
        static_summary=_truncate_bytes(ticket.title, SUMMARY_LIMIT),
        static_details=_details(ticket),
        memo={"title": ticket.title},
        priority=Priority(priority_key=ticket.priority),
    )


def handle_for(client: Client, ticket_id: str) -> WorkflowHandle[TicketWorkflow, object]:
    return client.get_workflow_handle_for(TicketWorkflow.run, workflow_id_for(ticket_id))


async def describe(client: Client, ticket_id: str) -> TicketSummary:
    try:
        desc = await client.get_workflow_handle(workflow_id_for(ticket_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise TicketOperationError(f"no ticket {ticket_id!r} has been submitted") from exc
        raise
    attrs = desc.typed_search_attributes
    return TicketSummary(
        ticket_id=ticket_id,
        workflow_id=desc.id,
        title=await desc.static_summary() or "",
        state=attrs.get(visibility.TICKET_STATE) or "?",
        stage=attrs.get(visibility.TICKET_STAGE),
        priority=attrs.get(visibility.TICKET_PRIORITY),
        repo=attrs.get(visibility.TICKET_REPO),
        status=desc.status.name if desc.status else "UNKNOWN",
        started=desc.start_time,
    )


async def list_tickets(client: Client, state: str | None = None, limit: int = 200) -> list[TicketSummary]:
    query = f"WorkflowType = '{policy.WORKFLOW_TYPE}'"
    if state:
        query += f" AND TicketState = '{state.upper()}'"
    found: list[TicketSummary] = []
    async for execution in client.list_workflows(query, limit=limit):
        attrs = execution.typed_search_attributes
        found.append(
            TicketSummary(
                ticket_id=execution.id.removeprefix("ticket-"),
                workflow_id=execution.id,
                title=str(await execution.memo_value("title", "")),
                state=attrs.get(visibility.TICKET_STATE) or "?",
                stage=attrs.get(visibility.TICKET_STAGE),
                priority=attrs.get(visibility.TICKET_PRIORITY),
                repo=attrs.get(visibility.TICKET_REPO),
                status=execution.status.name if execution.status else "UNKNOWN",
                started=execution.start_time,
                closed=execution.close_time,
            )
        )
    return found


async def status(client: Client, ticket_id: str) -> TicketStatus:
    await describe(client, ticket_id)  # a clear error for unknown tickets
    try:
        result = await handle_for(client, ticket_id).query(TicketWorkflow.status)
    except RPCError as exc:
        raise TicketOperationError(
            f"ticket {ticket_id}: no worker answered the status query ({exc.message}); "
            "is `ticketflow worker` "
            "running?"
        ) from exc
    return result


async def _update(client: Client, ticket_id: str, update: object, request: object) -> Ack:
    summary = await describe(client, ticket_id)
    if summary.status != WorkflowExecutionStatus.RUNNING.name:
        raise TicketOperationError(
            f"ticket {ticket_id} has finished ({summary.state}); there is nothing to answer"
        )
    try:
        ack: Ack = await handle_for(client, ticket_id).execute_update(update, request)  # type: ignore[call-overload]
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise TicketOperationError(message.removeprefix("ValueError: ")) from exc
    except RPCError as exc:
        raise TicketOperationError(f"ticket {ticket_id}: {exc.message}") from exc
    return ack


async def unblock(client: Client, ticket_id: str, guidance: str, by: str = "operator") -> Ack:
    return await _update(client, ticket_id, TicketWorkflow.unblock, UnblockRequest(guidance=guidance, by=by))


async def rollback(client: Client, ticket_id: str, by: str = "operator") -> Ack:
    return await _update(client, ticket_id, TicketWorkflow.rollback, RollbackRequest(by=by))


async def approve(
    client: Client, ticket_id: str, note: str = "", by: str = "operator", extra_tokens: int | None = None
) -> Ack:
    request = ApproveRequest(note=note, by=by, extra_tokens=extra_tokens)
    return await _update(client, ticket_id, TicketWorkflow.approve, request)


async def cancel(client: Client, ticket_id: str, reason: str, by: str = "operator") -> str:
    summary = await describe(client, ticket_id)
    if summary.status != WorkflowExecutionStatus.RUNNING.name:
        raise TicketOperationError(f"ticket {ticket_id} is already {summary.state}; nothing to cancel")
    await handle_for(client, ticket_id).signal(TicketWorkflow.cancel, CancelRequest(reason=reason, by=by))
    return f"cancel requested for ticket {ticket_id}"


async def retry(client: Client, settings: Settings, ticket_id: str, by: str = "operator") -> str:
    """A BLOCKED ticket retries its stage; a FAILED ticket starts a new run at the stage it failed."""
    summary = await describe(client, ticket_id)
    if summary.status == WorkflowExecutionStatus.RUNNING.name:
        ack = await _update(client, ticket_id, TicketWorkflow.retry, RetryRequest(by=by))
        return ack.message
    if summary.status != WorkflowExecutionStatus.FAILED.name:
        raise TicketOperationError(
            f"ticket {ticket_id} is {summary.state}; only BLOCKED or FAILED tickets retry"
        )
    failed_run = await _failed_run_input(client, ticket_id)
    # The new run follows today's configuration (the operator may have just fixed it), not the old one.
    next_run = failed_run.model_copy(update={"options": run_options(settings, failed_run.ticket).options})
    await _start(client, settings, next_run, WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
    stage = next_run.carry.resume_stage.value if next_run.carry else "the start"
    return f"ticket {ticket_id} restarted at {stage}"


async def _failed_run_input(client: Client, ticket_id: str) -> TicketRun:
    try:
        await client.get_workflow_handle(workflow_id_for(ticket_id)).result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == "TicketFailed" and cause.details:
            return TicketRun.model_validate(cause.details[0])
        raise TicketOperationError(
            f"ticket {ticket_id} failed outside ticketflow's control ({exc.cause}); submit it again"
        ) from exc
    raise TicketOperationError(f"ticket {ticket_id} did not fail")


# Stages whose block a human answers with guidance for the agent; a block anywhere else (classify, the
# workspace, the PR) comes from configuration, credentials or a host: fix that, then retry the stage.
AGENT_STAGES = (Stage.RUN_AGENT, Stage.RUN_CHECKS, Stage.REVIEW)
RUNNING = (
    TicketState.QUEUED,
    TicketState.CLASSIFYING,
    TicketState.WORKING,
    TicketState.TESTING,
    TicketState.REVIEWING,
    TicketState.OPENING_PR,
)


def next_steps(st: TicketStatus) -> list[str]:
    """What a person can do next with this ticket, as commands with a short why; none when nothing is
    theirs to do (DONE, CANCELLED, or a ticket that resumes on its own)."""
    tid = st.ticket_id
    stage = st.stage.value if st.stage else "its stage"
    if st.state is TicketState.BLOCKED:
        if st.stage in AGENT_STAGES:
            steps = [
                f'ticketflow unblock {tid} --guidance "<what the agent should do>"   (the agent goes on)',
                f"ticketflow retry {tid}   (run {stage} again as it is, e.g. after fixing the environment)",
            ]
            if st.stage is Stage.RUN_AGENT and st.last_good_commit:
                steps.append(
                    f"ticketflow rollback {tid}   (back to {st.last_good_commit[:12]}, checks passed there)"
                )
        else:
            steps = [
                f"ticketflow retry {tid}   (after fixing the cause: configuration, credentials, the host)"
            ]
        return [*steps, f"ticketflow cancel {tid}"]
    if st.state is TicketState.AWAITING_APPROVAL:
        if st.stage is Stage.APPROVAL:
            return [f"ticketflow approve {tid}   (opens the PR)", f"ticketflow cancel {tid}"]
        return [
            f"ticketflow approve {tid} --extra-tokens <tokens>   (extend the token budget; it goes on)",
            f"ticketflow cancel {tid}",
        ]
    if st.state is TicketState.FAILED:
        where = st.failed_stage.value if st.failed_stage else stage
        return [f"ticketflow retry {tid}   (restarts at {where}; fix the cause first)"]
    if st.state in RUNNING:
        follow = [f"ticketflow logs {tid} -f   (the agent's output)"] if st.stage is Stage.RUN_AGENT else []
        return [*follow, f"ticketflow cancel {tid}"]
    return []  # DONE, CANCELLED; WAITING_FOR_LIMIT / WAITING_FOR_MODEL resume on their own

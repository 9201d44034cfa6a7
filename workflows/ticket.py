"""TicketWorkflow: one ticket, from classification to an open pull request.

classify -> prepare workspace -> [run agent -> run checks -> review]* -> (approval) -> open PR

Failed checks and blocking review findings go back to the agent with the failure output, at most
max_iterations times. Whatever cannot move on by itself (an agent that asks a question, a stage that
exhausted its retries, a fix loop that ran out) waits durably for a human in BLOCKED; a human answers
with the `unblock` or `retry` update. All I/O happens in activities; this module only orchestrates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from workflows import metrics, policy, visibility
    from workflows.contracts import (
        MAX_OUTPUT_LINES,
        MISSING_TICKET,
        UNTESTED_LABEL,
        Ack,
        AgentOutput,
        AgentRequest,
        AgentResult,
        ApproveRequest,
        CancelRequest,
        Carry,
        CheckOutcome,
        CheckReport,
        ChecksRequest,
        Classification,
        ClassifyRequest,
        DependencyRequest,
        DependencyStates,
        NotifyRequest,
        PullRequestRef,
        PullRequestRequest,
        ReleaseRequest,
        ReleaseResult,
        ResetRequest,
        ResetResult,
        RetryRequest,
        ReviewReport,
        ReviewRequest,
        RollbackRequest,
        Stage,
        StatusEvent,
        TicketResult,
        TicketRun,
        TicketState,
        TicketStatus,
        TokenUsage,
        UnblockRequest,
        Workspace,
        WorkspaceRequest,
        WriteBackRequest,
        WriteBackResult,
        workflow_id_for,
    )
    from workflows.feedback import check_feedback, review_feedback
    from workflows.limit_gate import GateClient, LimitHit, call_through_gates, usage_limit_of

ResultT = TypeVar("ResultT", bound=BaseModel)
MAX_EVENTS = 50


@dataclass
class _HumanAnswer:
    kind: str  # "unblock" or "retry"
    guidance: str | None
    by: str


class _TicketFailed(Exception):
    def __init__(self, reason: str, stage: Stage) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


@workflow.defn(name=policy.WORKFLOW_TYPE)
class TicketWorkflow:
    @workflow.init
    def __init__(self, run: TicketRun) -> None:
        self._ticket = run.ticket
        self._options = run.options
        carry = run.carry
        if carry is None:
            self._status = TicketStatus(
                ticket_id=run.ticket.id,
                title=run.ticket.title,
                max_iterations=run.ticket.max_iterations,
                branch=run.ticket.branch,
            )
        else:
            self._status = carry.status.model_copy(update={"runs": carry.status.runs + 1})
        first_stage = Stage.DEPENDENCIES if run.ticket.depends_on else Stage.CLASSIFY
        self._next_stage = carry.resume_stage if carry else first_stage
        self._workspace: Workspace | None = carry.workspace if carry else None
        self._feedback = carry.feedback if carry else None
        self._guidance = carry.guidance if carry else None
        self._resume_session = carry.resume_session if carry else False
        self._answer: _HumanAnswer | None = None
        self._approval: ApproveRequest | None = None
        self._cancel_request: CancelRequest | None = None
        self._pipeline: asyncio.Task[TicketResult] | None = None
        self._published: tuple[str | None, str | None] = (None, None)
        self._notifications: list[workflow.ActivityHandle[int]] = []
        self._worker_losses = 0
        self._model_down_since: datetime | None = None
        self._model_down_pauses = 0

    # ------------------------------------------------------------------------------------------ run

    @workflow.run
    async def run(self, run: TicketRun) -> TicketResult:
        self._gates = GateClient()  # registers the limit_gate_pass signal handler; issues no command
        if self._status.state is TicketState.FAILED:
            self._status.failed_stage = None
            self._note(f"retrying from {self._next_stage.value} (run {self._status.runs})")
        self._status.started_at = self._status.started_at or workflow.now()
        self._status.trace_id = self._status.trace_id or metrics.trace_id()
        self._transition(TicketState.QUEUED if self._status.state.is_final else self._status.state)
        self._pipeline = asyncio.create_task(self._drive())
        try:
            return await self._pipeline
        except asyncio.CancelledError:
            reason = (
                self._cancel_request.reason if self._cancel_request else "workflow cancellation requested"
            )
            self._transition(TicketState.CANCELLED, note=reason)
            if self._cancel_request is None:
                raise  # a Temporal cancellation: let the run end as Canceled
            await self._write_back(TicketState.CANCELLED, reason)
            await self._release_workspace(TicketState.CANCELLED)
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._result()
        except _TicketFailed as failed:
            self._status.failed_stage = failed.stage
            self._transition(TicketState.FAILED, note=failed.reason)
            await self._write_back(TicketState.FAILED, failed.reason)
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._settle_notifications()
            # The next run's input rides in the failure, so `ticketflow retry` resumes at the failed stage.
            next_run = TicketRun(ticket=self._ticket, options=self._options, carry=self._carry(failed.stage))
            raise ApplicationError(
                failed.reason, next_run.model_dump(mode="json"), type="TicketFailed", non_retryable=True
            ) from None

    async def _drive(self) -> TicketResult:
        stages: dict[Stage, Callable[[], Awaitable[Stage | None]]] = {
            Stage.DEPENDENCIES: self._wait_for_dependencies,
            Stage.CLASSIFY: self._classify,
            Stage.PREPARE_WORKSPACE: self._prepare_workspace,
            Stage.RUN_AGENT: self._run_agent,
            Stage.RUN_CHECKS: self._run_checks,
            Stage.REVIEW: self._review,
            Stage.APPROVAL: self._approval_gate,
            Stage.OPEN_PR: self._open_pr,
        }
        stage: Stage | None = self._next_stage
        while stage is not None:
            await self._continue_as_new_if_long(stage)
            current = stage
            try:
                stage = await stages[current]()
                self._model_down_since, self._model_down_pauses = None, 0
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    # The activity ended because the ticket is being cancelled, not because it failed.
                    raise asyncio.CancelledError() from err
                hit = usage_limit_of(err) if workflow.patched(LIMIT_GATE_PATCH) else None
                if hit is not None:
                    await self._after_usage_limit(current, hit)
                    continue  # stage stays `current`: retried once the limit has reset
                if (
                    _model_down(err)
                    and workflow.patched(MODEL_DOWN_PATCH)
                    and await self._wait_for_model_server(current, err)
                ):
                    continue  # the stage runs again: the server may be back
                stage = await self._after_stage_failure(current, err)
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._settle_notifications()
        return self._result()

    # --------------------------------------------------------------------------------------- stages

    async def _wait_for_dependencies(self) -> Stage:
        """Poll the dependencies' states until all are DONE; a failed one asks a human what to do."""
        poll = self._options.dependency_poll_seconds
        polls = 0
        while True:
            request = DependencyRequest(ticket_ids=self._ticket.depends_on)
            states = (
                await self._call(policy.DEPENDENCY_STATES, request, DependencyStates, on_host=False)
            ).states
            polls += 1
            pending = {dep: state for dep, state in states.items() if state != TicketState.DONE.value}
            if not pending:
                self._status.waiting_on = []
                return Stage.CLASSIFY
            # A dependency nobody submits (or whose history was purged) must not keep the ticket forever.
            gone = TicketState.FAILED.value, TicketState.CANCELLED.value
            ended = {
                dep: st if st in gone else "never submitted"
                for dep, st in pending.items()
                if st in gone or (st == MISSING_TICKET and polls > policy.DEPENDENCY_MISSING_POLLS)
            }
            if ended:
                listed = ", ".join(f"{dep}: {state}" for dep, state in sorted(ended.items()))
                answer = await self._wait_for_human(
                    f"dependency {listed}; unblock to go ahead without it, retry to check again",
                    Stage.DEPENDENCIES,
                )
                if answer.kind == "unblock":
                    self._guidance = answer.guidance
                    self._status.waiting_on = []
                    return Stage.CLASSIFY
                continue
            waiting = [f"{dep} ({state})" for dep, state in sorted(pending.items())]
            if waiting != self._status.waiting_on or self._status.stage is not Stage.DEPENDENCIES:
                self._status.waiting_on = waiting
                self._transition(
                    TicketState.QUEUED, Stage.DEPENDENCIES, note="waiting for " + ", ".join(waiting)
                )
            await workflow.sleep(timedelta(seconds=poll), summary="waiting for dependencies")
            poll = min(poll * 1.5, policy.DEPENDENCY_POLL_MAX.total_seconds())

    async def _classify(self) -> Stage:
        self._transition(TicketState.CLASSIFYING, Stage.CLASSIFY)
        queue = policy.llm_queue(workflow.info().task_queue) if workflow.patched(LLM_QUEUE_PATCH) else None
        result = await self._gated(
            Stage.CLASSIFY,
            TicketState.CLASSIFYING,
            lambda: self._call(
                policy.CLASSIFY, ClassifyRequest(ticket=self._ticket), Classification, queue=queue
            ),
        )
        self._status.classification = result
        self._record_usage(result.model, result.tokens)
        await self._within_budget(Stage.CLASSIFY)
        return Stage.PREPARE_WORKSPACE

    async def _prepare_workspace(self) -> Stage:
        self._transition(TicketState.WORKING, Stage.PREPARE_WORKSPACE)
        self._workspace = await self._call(
            policy.PREPARE_WORKSPACE, WorkspaceRequest(ticket=self._ticket), Workspace, on_host=False
        )
        self._status.branch = self._workspace.branch
        ws = self._workspace
        self._status.test_command = ws.test_command
        self._status.test_command_source = ws.test_command_source
        self._status.test_command_reason = ws.test_command_reason
        if ws.test_command_source is not None or ws.test_command_reason:
            source = f"{ws.test_command_source}: " if ws.test_command_source else ""
            why = ws.test_command_reason[:300]
            self._note(f"test command: {ws.test_command or '(none)'} ({source}{why})")
        return Stage.RUN_AGENT

    async def _run_agent(self) -> Stage:
        self._status.iteration = max(self._status.iteration, 1)
        self._transition(TicketState.WORKING, Stage.RUN_AGENT)
        request = AgentRequest(
            ticket=self._ticket,
            workspace=self._require_workspace(),
            classification=self._status.classification or Classification(),
            iteration=self._status.iteration,
            feedback=self._feedback,
            guidance=self._guidance,
            session_id=self._status.session_id,
            resume=self._resume_session,
            tokens_left=self._tokens_left(),
        )
        timeout = None
        if self._ticket.agent_timeout_minutes:
            timeout = timedelta(minutes=self._ticket.agent_timeout_minutes)
        result = await self._gated(
            Stage.RUN_AGENT,
            TicketState.WORKING,
            lambda: self._call(policy.RUN_AGENT, request, AgentResult, timeout=timeout),
            _agent_limit,
        )
        self._absorb_agent_result(result)
        self._status.last_commit = result.last_commit or self._status.last_commit
        extended = await self._within_budget(Stage.RUN_AGENT)
        if extended and result.outcome == "blocked":
            self._resume_session = True
            return Stage.RUN_AGENT  # it stopped for its budget, which a human has just extended
        if result.outcome == "done":
            self._guidance, self._resume_session = None, False
            return Stage.RUN_CHECKS
        if result.outcome == "usage_limit" and self._is_gated(Stage.RUN_AGENT, result.provider):
            # The gate was told; the next attempt waits there until the reset (and one probe goes first).
            self._status.waiting_until = result.reset_at
            self._transition(TicketState.WAITING_FOR_LIMIT, Stage.RUN_AGENT, note=result.reason)
        elif result.outcome in ("usage_limit", "rate_limited"):
            await self._wait_for_limit(result)
        else:
            answer = await self._wait_for_human(f"the agent needs help: {result.reason}", Stage.RUN_AGENT)
            self._guidance = answer.guidance or self._guidance
        self._resume_session = True
        return Stage.RUN_AGENT

    async def _run_checks(self) -> Stage:
        self._transition(TicketState.TESTING, Stage.RUN_CHECKS)
        limit = self._options.checks_timeout_seconds
        report = await self._call(
            policy.RUN_CHECKS,
            ChecksRequest(
                workspace=self._require_workspace(),
                test_command=self._ticket.test_command,
                timeout_seconds=limit,
            ),
            CheckReport,
            timeout=timedelta(seconds=limit) + policy.CHECKS_MARGIN,
        )
        self._status.last_checks = report
        if report.passed:
            self._feedback = None
            self._status.last_good_commit = self._status.last_commit or self._status.last_good_commit
            return Stage.REVIEW
        if report.outcome not in (None, CheckOutcome.FAILED, CheckOutcome.TIMED_OUT) and workflow.patched(
            TEST_GATE_PATCH
        ):
            return await self._test_gate(report)
        self._feedback = check_feedback(report)
        counts = (
            f"{report.failed_count} failed" if report.failed_count is not None else f"exit {report.exit_code}"
        )
        return await self._another_iteration(f"the checks still fail ({report.command}: {counts})")

    async def _test_gate(self, report: CheckReport) -> Stage:
        """A run that says nothing about the agent's code: no agent iteration is spent on it. A broken
        environment, or no test at all where the repository requires tests, blocks the ticket at once with
        the reason and the fix; untested work where tests are optional goes on to a draft PR."""
        outcome = report.verdict
        fix = f" Fix: {report.env_hint}" if report.env_hint else ""
        if outcome is CheckOutcome.ENV_ERROR:
            metrics.record_test_gate(outcome.value, "blocked")
            return await self._blocked_on_checks(
                f"the test environment is broken: {report.reason}.{fix}", report
            )
        if report.tests_required:
            metrics.record_test_gate(outcome.value, "blocked")
            return await self._blocked_on_checks(f"no test ran: {report.reason}.{fix}", report)
        self._feedback = None
        self._note(f"untested ({report.reason}): the PR opens as a draft labelled {UNTESTED_LABEL}")
        return Stage.REVIEW

    async def _blocked_on_checks(self, reason: str, report: CheckReport) -> Stage:
        """`retry` runs the checks again (the environment was fixed); `unblock` hands the guidance (write
        tests, declare a dependency) to the agent."""
        answer = await self._wait_for_human(reason, Stage.RUN_CHECKS)
        if answer.kind != "unblock":
            return Stage.RUN_CHECKS
        self._guidance = answer.guidance or self._guidance
        self._feedback = check_feedback(report)
        self._status.iteration += 1
        self._resume_session = True
        return Stage.RUN_AGENT

    async def _review(self) -> Stage:
        self._transition(TicketState.REVIEWING, Stage.REVIEW)
        request = ReviewRequest(
            ticket=self._ticket,
            workspace=self._require_workspace(),
            classification=self._status.classification or Classification(),
        )
        report = await self._gated(
            Stage.REVIEW, TicketState.REVIEWING, lambda: self._call(policy.REVIEW, request, ReviewReport)
        )
        self._status.last_review = report
        self._record_usage(report.model, report.tokens)
        await self._within_budget(Stage.REVIEW)
        if report.blocking:
            self._feedback = review_feedback(report)
            first = report.blocking[0]
            return await self._another_iteration(
                f"the review found {len(report.blocking)} blocking finding(s), first: {first.message}"
            )
        if self._options.require_approval or self._ticket.require_approval:
            return Stage.APPROVAL
        return Stage.OPEN_PR

    # ------------------------------------------------------------------------------ token budget

    def _token_budget(self) -> int | None:
        return self._status.token_budget or self._ticket.budget.tokens

    def _tokens_left(self) -> int | None:
        budget = self._token_budget()
        return None if budget is None else max(0, budget - self._status.tokens.total)

    async def _within_budget(self, stage: Stage) -> bool:
        """Over its token budget the ticket pauses for `approve` (with extra_tokens), never killed.

        Returns True when it paused and a human extended the budget."""
        budget = self._token_budget()
        used = self._status.tokens.total
        if budget is None or used < budget or not workflow.patched(TOKEN_BUDGET_PATCH):
            return False
        self._approval = None
        note = f"token budget of {budget} reached ({used} used); approve with extra tokens to continue"
        self._transition(TicketState.AWAITING_APPROVAL, stage, note=note)
        approved = await self._wait_with_reminders(
            lambda: self._approval is not None, self._options.approval_timeout_seconds, "a budget extension"
        )
        if not approved or self._approval is None:
            raise _TicketFailed(f"token budget of {budget} reached and not extended", stage)
        extra = self._approval.extra_tokens or self._ticket.budget.tokens or budget
        self._status.token_budget = max(budget, used) + extra
        self._note(f"budget extended by {extra} tokens to {self._status.token_budget} by {self._approval.by}")
        self._approval = None
        return True

    async def _approval_gate(self) -> Stage:
        self._approval = None
        self._transition(TicketState.AWAITING_APPROVAL, Stage.APPROVAL)
        approved = await self._wait_with_reminders(
            lambda: self._approval is not None, self._options.approval_timeout_seconds, "approval"
        )
        if not approved:
            raise _TicketFailed(
                f"not approved within {_human_duration(self._options.approval_timeout_seconds)}",
                Stage.APPROVAL,
            )
        return Stage.OPEN_PR

    async def _open_pr(self) -> None:
        self._transition(TicketState.OPENING_PR, Stage.OPEN_PR)
        ticket = self._ticket
        checks = self._status.last_checks
        if checks is not None and checks.untested and not checks.tests_required:
            # Opened as a draft (checks did not pass), labelled so nobody mistakes it for tested work.
            labels = [label for label in ticket.labels if label != UNTESTED_LABEL]
            ticket = ticket.model_copy(update={"labels": [*labels, UNTESTED_LABEL]})
            metrics.record_test_gate(checks.verdict.value, "untested_pr")
        request = PullRequestRequest(
            ticket=ticket,
            workspace=self._require_workspace(),
            classification=self._status.classification or Classification(),
            checks=self._status.last_checks,
            review=self._status.last_review,
            models_used=self._status.models_used,
            tokens=self._status.tokens,
            iterations=self._status.iteration,
            workflow_id=workflow.info().workflow_id,
            trace_id=self._status.trace_id,
        )
        ref = await self._call(policy.OPEN_PR, request, PullRequestRef)
        self._status.pr_url = ref.url
        self._transition(TicketState.DONE, None, note=ref.url)
        await self._write_back(TicketState.DONE)
        await self._release_workspace(TicketState.DONE)
        return None

    async def _write_back(self, state: TicketState, reason: str = "") -> None:
        """Report the outcome to the ticket's source; a failed write-back is noted, never fatal."""
        if not self._ticket.source or not workflow.patched("write-back"):
            return
        review = self._status.last_review
        request = WriteBackRequest(
            ticket=self._ticket,
            state=state,
            pr_url=self._status.pr_url,
            reason=reason,
            findings=review.findings if review and state is TicketState.DONE else [],
        )
        try:
            result = await self._call(policy.WRITE_BACK, request, WriteBackResult, on_host=False)
            self._note(f"write-back: {result.action}")
        except ActivityError as err:
            self._note(f"write-back failed: {err.cause or err}")

    async def _release_workspace(self, state: TicketState) -> None:
        """Give the worktree back to its worker's pool; a failure is noted, never fatal."""
        if self._workspace is None or not workflow.patched(RELEASE_WORKSPACE_PATCH):
            return
        request = ReleaseRequest(ticket_id=self._ticket.id, workspace=self._workspace, state=state)
        try:
            result = await self._call(policy.RELEASE_WORKSPACE, request, ReleaseResult)
            self._note(f"worktree {result.action}")
        except ActivityError as err:
            self._note(f"releasing the worktree failed: {err.cause or err}")

    # -------------------------------------------------------------------------- loops and waiting

    async def _another_iteration(self, reason: str) -> Stage:
        """Send the failure back to the agent, or to a human once the fix loop is used up."""
        if self._status.iteration >= self._status.max_iterations:
            answer = await self._wait_for_human(
                f"fix loop ran out after {self._status.iteration} iteration(s): {reason}", Stage.RUN_AGENT
            )
            self._status.max_iterations += self._ticket.max_iterations
            self._guidance = answer.guidance or self._guidance
        self._status.iteration += 1
        metrics.record_iteration()
        self._resume_session = True
        return Stage.RUN_AGENT

    async def _after_stage_failure(self, stage: Stage, err: ActivityError) -> Stage:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        lost = (isinstance(cause, ApplicationError) and cause.type == "WorkerLost") or (
            isinstance(cause, ActivityTimeout) and cause.type is TimeoutType.HEARTBEAT
        )
        if lost and self._worker_losses < policy.WORKER_LOST_RERUNS:
            # A dead worker (reclaimed, or silent past the heartbeat timeout) is no fault of the stage:
            # run it again (from its checkpoint commits) rather than spend a human's time, a few times.
            self._worker_losses += 1
            self._note(f"{stage.value} lost its worker ({self._worker_losses}); running it again")
            return stage
        how = (
            {
                RetryState.MAXIMUM_ATTEMPTS_REACHED: "retries exhausted",
                RetryState.NON_RETRYABLE_FAILURE: "not retryable",
                RetryState.TIMEOUT: "timed out",
            }.get(err.retry_state, "failed")
            if err.retry_state is not None
            else "failed"
        )
        self._status.failed_stage = stage
        answer = await self._wait_for_human(f"{stage.value} failed ({how}): {message}", stage)
        self._status.failed_stage = None
        if stage is Stage.RUN_AGENT and answer.guidance:
            self._guidance = answer.guidance
        return stage

    async def _wait_for_human(self, reason: str, stage: Stage) -> _HumanAnswer:
        self._answer = None
        self._status.blocked_reason = reason
        self._status.blocked_since = workflow.now()
        self._status.unblock_command = visibility.unblock_command(self._ticket.id)
        self._transition(TicketState.BLOCKED, stage, note=reason)
        workflow.logger.warning("ticket %s is blocked: %s", self._ticket.id, reason)
        await self._write_back(TicketState.BLOCKED, reason)
        answered = await self._wait_with_reminders(
            lambda: self._answer is not None, self._options.blocked_timeout_seconds, "a human to unblock"
        )
        if not answered or self._answer is None:
            raise _TicketFailed(
                f"blocked for {_human_duration(self._options.blocked_timeout_seconds)} "
                f"with no answer: {reason}",
                stage,
            )
        answer, self._answer = self._answer, None
        self._status.blocked_reason = self._status.blocked_since = self._status.unblock_command = None
        self._note(f"{answer.kind} by {answer.by}")
        if answer.kind == "rollback":
            await self._roll_back()
        return answer

    async def _roll_back(self) -> None:
        """Reset the worktree to the last commit whose checks passed (or the base); the agent goes on."""
        workspace = self._require_workspace()
        target = self._status.last_good_commit or workspace.base_commit
        reset = await self._call(
            policy.RESET_WORKSPACE, ResetRequest(workspace=workspace, commit=target), ResetResult
        )
        self._status.last_commit = reset.head
        self._feedback = (
            f"The worktree was rolled back to {target[:12]}: every change after that commit is gone. "
            "Start again from there."
        )
        self._resume_session = False
        self._note(f"rolled back to {target[:12]}")

    async def _wait_with_reminders(self, ready: Callable[[], bool], total_seconds: float, what: str) -> bool:
        """Wait durably for `ready`; remind every interval; give up (return False) after total_seconds."""
        deadline = workflow.now() + timedelta(seconds=total_seconds)
        reminder = timedelta(seconds=self._options.reminder_interval_seconds)
        while not ready():
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                return False
            try:
                await workflow.wait_condition(
                    ready, timeout=min(reminder, remaining), timeout_summary=f"waiting for {what}"
                )
            except TimeoutError:
                if not ready() and deadline > workflow.now():
                    self._status.reminders += 1
                    workflow.logger.warning("ticket %s is still waiting for %s", self._ticket.id, what)
                    self._publish()
        return True

    # --------------------------------------------------------------------------------- limit gates

    def _providers(self, stage: Stage) -> list[str]:
        key = _MODEL_STAGE.get(stage)
        return self._options.model_providers.get(key, []) if key else []

    def _is_gated(self, stage: Stage, provider: str | None) -> bool:
        return (
            provider is not None and provider in self._providers(stage) and workflow.patched(LIMIT_GATE_PATCH)
        )

    async def _gated(
        self,
        stage: Stage,
        state: TicketState,
        call: Callable[[], Awaitable[ResultT]],
        limit_in: Callable[[ResultT], LimitHit | None] = lambda _: None,
    ) -> ResultT:
        """Run a model-backed stage behind its providers' limit gates (no gates: just run it)."""
        providers = self._providers(stage)
        if not providers or not workflow.patched(LIMIT_GATE_PATCH):
            return await call()

        def held_back() -> None:
            self._transition(
                TicketState.WAITING_FOR_LIMIT, stage, note=f"limit gate of {', '.join(providers)}"
            )

        async def after_pass() -> ResultT:
            if self._status.state is TicketState.WAITING_FOR_LIMIT:
                self._status.waiting_until = None
                self._transition(state, stage, note="the limit gate let this ticket through")
            return await call()

        return await call_through_gates(self._gates, providers, after_pass, held_back, limit_in)

    async def _after_usage_limit(self, stage: Stage, hit: LimitHit) -> None:
        """classify/review hit a usage limit: a gate holds the retry, or else a timer until the reset."""
        self._status.waiting_until = hit.reset_at
        self._transition(TicketState.WAITING_FOR_LIMIT, stage, note=f"{hit.provider}: {hit.reason}")
        if self._is_gated(stage, hit.provider):
            return
        until = hit.reset_at or workflow.now() + timedelta(hours=1)
        delay = max(until - workflow.now(), timedelta(seconds=1)) + timedelta(
            seconds=workflow.random().uniform(0, 1)
        )
        await workflow.sleep(delay, summary=f"usage limit until {until.isoformat()}")
        self._status.waiting_until = None

    async def _wait_for_limit(self, result: AgentResult) -> None:
        now = workflow.now()
        if result.reset_at is not None:
            until = result.reset_at
        else:
            until = now + timedelta(seconds=result.retry_after_seconds or 3600)
        # A little jitter so tickets waiting on one limit don't all wake in the same instant.
        delay = max(until - now, timedelta(seconds=1)) + timedelta(seconds=workflow.random().uniform(0, 1))
        summary = f"usage limit until {until.isoformat()}"
        state, stage = TicketState.WAITING_FOR_LIMIT, Stage.RUN_AGENT
        await self._sleep_visibly(state, stage, until, delay, result.reason, summary)

    async def _sleep_visibly(
        self, state: TicketState, stage: Stage, until: datetime, delay: timedelta, note: str, summary: str
    ) -> None:
        """Show the ticket waiting in `state` until `until`, and sleep durably for `delay`."""
        self._status.waiting_until = until
        self._transition(state, stage, note=note)
        await workflow.sleep(delay, summary=summary)
        self._status.waiting_until = None

    async def _wait_for_model_server(self, stage: Stage, err: ActivityError) -> bool:
        """Pause (durably, visibly) before the stage runs again; False once the wait has gone on too long."""
        now = workflow.now()
        self._model_down_since = self._model_down_since or now
        waited = (now - self._model_down_since).total_seconds()
        if waited >= self._options.model_down_max_wait_seconds:
            self._model_down_since, self._model_down_pauses = None, 0
            return False
        first = self._options.model_down_first_wait_seconds
        cap = max(first, policy.MODEL_DOWN_MAX_PAUSE.total_seconds())
        pause = min(first * 2**self._model_down_pauses, cap)
        self._model_down_pauses += 1
        until = now + timedelta(seconds=pause)
        at = until.isoformat(timespec="seconds")
        cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
        note = f"no model answered ({cause}); {stage.value} runs again at {at}"
        summary = f"model server down; retry at {at}"
        await self._sleep_visibly(
            TicketState.WAITING_FOR_MODEL, stage, until, timedelta(seconds=pause), note, summary
        )
        return True

    async def _continue_as_new_if_long(self, stage: Stage) -> None:
        info = workflow.info()
        if info.get_current_history_length() < self._options.history_event_limit and not (
            info.is_continue_as_new_suggested()
        ):
            return
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._note(f"continued as new at {stage.value} after {info.get_current_history_length()} events")
        workflow.continue_as_new(
            TicketRun(ticket=self._ticket, options=self._options, carry=self._carry(stage))
        )

    def _carry(self, stage: Stage) -> Carry:
        return Carry(
            status=self._status,
            resume_stage=stage,
            workspace=self._workspace,
            feedback=self._feedback,
            guidance=self._guidance,
            resume_session=self._resume_session,
        )

    # ------------------------------------------------------------------------------------ helpers

    async def _call(
        self,
        spec: policy.ActivityPolicy,
        arg: BaseModel,
        result_type: type[ResultT],
        *,
        on_host: bool = True,
        timeout: timedelta | None = None,
        queue: str | None = None,
    ) -> ResultT:
        """Run one activity; workspace-bound ones go to the worker that owns the worktree."""
        count = self._status.attempts.get(spec.name, 0) + 1
        self._status.attempts[spec.name] = count
        started = workflow.now()
        try:
            result: ResultT = await workflow.execute_activity(
                spec.name,
                arg,
                result_type=result_type,
                task_queue=queue
                or (self._require_workspace().host_queue if on_host and self._workspace else None),
                start_to_close_timeout=timeout or spec.start_to_close,
                schedule_to_close_timeout=spec.schedule_to_close,
                heartbeat_timeout=spec.heartbeat,
                retry_policy=spec.retry,
                cancellation_type=spec.cancellation,
                activity_id=f"{spec.name}-{count}",
                summary=f"{spec.name} #{count}",
            )
            return result
        finally:
            elapsed = (workflow.now() - started).total_seconds()
            self._status.timings[spec.name] = round(self._status.timings.get(spec.name, 0.0) + elapsed, 3)

    def _require_workspace(self) -> Workspace:
        if self._workspace is None:
            raise ApplicationError("no workspace prepared", type="InvalidState", non_retryable=True)
        return self._workspace

    def _absorb_agent_result(self, result: AgentResult) -> None:
        self._status.session_id = result.session_id or self._status.session_id
        self._status.last_output = result.output_tail[-MAX_OUTPUT_LINES:]
        self._record_usage(result.model or (f"agent:{result.agent}" if result.agent else None), result.tokens)

    def _record_usage(self, model: str | None, tokens: TokenUsage) -> None:
        if model and model not in self._status.models_used:
            self._status.models_used.append(model)
        self._status.tokens = self._status.tokens.plus(tokens)

    def _note(self, note: str) -> None:
        self._status.events.append(
            StatusEvent(at=workflow.now(), state=self._status.state, stage=self._status.stage, note=note)
        )
        del self._status.events[:-MAX_EVENTS]

    _KEEP = object()

    def _transition(self, state: TicketState, stage: Stage | object | None = _KEEP, note: str = "") -> None:
        self._status.state = state
        if stage is not TicketWorkflow._KEEP:
            self._status.stage = stage if isinstance(stage, Stage) else None
        self._status.updated_at = workflow.now()
        self._note(note)
        self._publish()
        if state in (TicketState.BLOCKED, TicketState.DONE, TicketState.FAILED):
            self._notify(note)

    def _notify(self, reason: str) -> None:
        """Tell the configured targets (activities/notify.py): started, never awaited here, so a dead
        receiver never holds up the ticket; Temporal retries delivery (policy.NOTIFY)."""
        if not self._options.notify or not workflow.patched("notify-on-blocked-done-failed"):
            return  # nobody to tell; histories from before notifications replay without the command
        status = self._status
        request = NotifyRequest(
            ticket_id=status.ticket_id,
            title=status.title,
            state=status.state,
            stage=status.stage,
            reason=reason,
            pr_url=status.pr_url,
            unblock_command=status.unblock_command,
            workflow_id=workflow.info().workflow_id,
            trace_id=status.trace_id,
        )
        self._notifications.append(
            workflow.start_activity(
                policy.NOTIFY.name,
                request,
                result_type=int,
                start_to_close_timeout=policy.NOTIFY.start_to_close,
                retry_policy=policy.NOTIFY.retry,
                cancellation_type=policy.NOTIFY.cancellation,
                activity_id=f"notify-{len(self._notifications) + 1}",
                summary=f"notify {status.state.value}",
            )
        )

    async def _settle_notifications(self) -> None:
        """A closed workflow's pending activities are dropped: let the last notifications land first
        (bounded by policy.NOTIFY's retries; a failed delivery does not fail the ticket)."""
        if self._notifications:
            await asyncio.gather(*self._notifications, return_exceptions=True)

    def _publish(self) -> None:
        """Keep search attributes and the Web UI's current details in step with the status."""
        state = self._status.state.value
        stage = self._status.stage.value if self._status.stage else None
        if (state, stage) != self._published:
            updates = [visibility.TICKET_STATE.value_set(state)]
            updates.append(
                visibility.TICKET_STAGE.value_set(stage) if stage else visibility.TICKET_STAGE.value_unset()
            )
            workflow.upsert_search_attributes(updates)
            self._published = (state, stage)
            metrics.record_transition(self._status.state, stage)
        workflow.set_current_details(visibility.render_details(self._status))

    def _result(self) -> TicketResult:
        return TicketResult(state=self._status.state, pr_url=self._status.pr_url, status=self._status)

    # ----------------------------------------------------------------------------- human interface

    @workflow.query(description="The ticket's current status")
    def status(self) -> TicketStatus:
        return self._status

    @workflow.update(description="Answer a BLOCKED ticket with guidance; the agent continues with it")
    def unblock(self, request: UnblockRequest) -> Ack:
        self._answer = _HumanAnswer("unblock", request.guidance, request.by)
        return Ack(
            state=TicketState.BLOCKED,
            message=f"ticket {self._ticket.id} unblocked; it continues with your guidance",
        )

    @unblock.validator
    def _validate_unblock(self, request: UnblockRequest) -> None:
        self._require_blocked("unblock")

    @workflow.update(description="Retry the stage a BLOCKED ticket stopped at")
    def retry(self, request: RetryRequest) -> Ack:
        self._answer = _HumanAnswer("retry", None, request.by)
        stage = self._status.stage.value if self._status.stage else "its stage"
        return Ack(state=TicketState.BLOCKED, message=f"ticket {self._ticket.id} retries {stage}")

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        self._require_blocked("retry")

    @workflow.update(
        description="Reset a BLOCKED ticket's worktree to its last good checkpoint; the agent restarts"
    )
    def rollback(self, request: RollbackRequest) -> Ack:
        self._answer = _HumanAnswer("rollback", None, request.by)
        good = self._status.last_good_commit
        target = good[:12] if good else "the base branch"
        return Ack(state=TicketState.BLOCKED, message=f"ticket {self._ticket.id} rolls back to {target}")

    @rollback.validator
    def _validate_rollback(self, request: RollbackRequest) -> None:
        self._require_blocked("rollback")
        if self._status.stage is not Stage.RUN_AGENT or self._workspace is None:
            raise ValueError(
                f"ticket {self._ticket.id} is not blocked on the agent's work; nothing to roll back"
            )

    @workflow.update(description="Approve a ticket that waits for approval before its PR opens")
    def approve(self, request: ApproveRequest) -> Ack:
        self._approval = request
        return Ack(state=TicketState.AWAITING_APPROVAL, message=f"ticket {self._ticket.id} approved")

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:
        if self._status.state is not TicketState.AWAITING_APPROVAL or self._approval is not None:
            raise ValueError(f"ticket {self._ticket.id} is {self._status.state.value}, not AWAITING_APPROVAL")

    @workflow.signal(name="agent_output", description="The running agent's newest output lines")
    def agent_output(self, output: AgentOutput) -> None:
        if self._status.stage is Stage.RUN_AGENT and not self._status.state.is_final:
            self._status.last_output = output.lines[-MAX_OUTPUT_LINES:]
            self._publish()  # current details only: the state did not change, so nothing is upserted

    @workflow.signal(description="Stop working on the ticket; it ends CANCELLED")
    def cancel(self, request: CancelRequest) -> None:
        if self._status.state.is_final or self._cancel_request is not None:
            return
        self._cancel_request = request
        if self._pipeline is not None:
            self._pipeline.cancel()

    def _require_blocked(self, action: str) -> None:
        if self._status.state is not TicketState.BLOCKED:
            raise ValueError(
                f"ticket {self._ticket.id} is {self._status.state.value}; "
                f"{action} only applies to BLOCKED tickets"
            )
        if self._answer is not None:
            raise ValueError(f"ticket {self._ticket.id} has already been answered and is moving on")


LIMIT_GATE_PATCH = "limit-gate"
MODEL_DOWN_PATCH = "model-down-wait"
RELEASE_WORKSPACE_PATCH = "release-workspace"
LLM_QUEUE_PATCH = "classify-on-llm-queue"
TOKEN_BUDGET_PATCH = "token-budget"
# CheckReport.outcome: an environment error or a run without tests blocks (or, where tests are optional,
# opens an untested draft PR) instead of going back to the agent.
TEST_GATE_PATCH = "test-gate-outcomes"
_MODEL_STAGE = {Stage.CLASSIFY: "classify", Stage.RUN_AGENT: "code", Stage.REVIEW: "review"}


def _agent_limit(result: AgentResult) -> LimitHit | None:
    if result.outcome != "usage_limit" or not result.provider:
        return None
    return LimitHit(result.provider, result.reset_at, result.reason)


def _human_duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _model_down(err: ActivityError) -> bool:
    """A model stage ran out of retries because no model of its chain could answer for now."""
    cause = err.cause
    return (
        isinstance(cause, ApplicationError)
        and cause.type in policy.MODEL_DOWN_ERRORS
        and err.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
    )


__all__ = ["TicketWorkflow", "workflow_id_for"]

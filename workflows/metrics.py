"""Ticket metrics counted from workflow code, and the ticket's trace id.

Everything here runs inside the workflow sandbox and records through `workflow.metric_meter()`, which
drops whatever is recorded while a workflow replays its history: a ticket is counted once however
often a worker replays it. Labels stay low-cardinality (state, stage, outcome, kind), never ticket ids.

`TicketMetricsInterceptor` (registered by the worker) counts started/finished tickets and, when a run
ends, its duration, per-stage time, fix-loop iterations and time spent waiting on humans and limits,
all read from the run's TicketStatus. `record_transition` is for live state changes from the workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.converter import PayloadConverter
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows.contracts import StatusEvent, TicketResult, TicketState, TicketStatus
from workflows.policy import WORKFLOW_TYPE

# Where the OpenTelemetry TracingInterceptor puts its W3C context (temporalio.contrib.opentelemetry).
TRACE_HEADER = "_tracer-data"
# States whose time counts as waiting, by what the ticket waits on.
WAIT_KINDS = {
    TicketState.BLOCKED: "human",
    TicketState.AWAITING_APPROVAL: "approval",
    TicketState.WAITING_FOR_LIMIT: "limit",
    TicketState.WAITING_FOR_MODEL: "model",
}


def _meter() -> Any:
    return workflow.metric_meter()


def record_started() -> None:
    _meter().create_counter("ticketflow_tickets_started", "tickets whose first run started").add(1)


def record_transition(new_state: TicketState, stage: str | None) -> None:
    """One state change (call where the workflow changes state, with the new state and stage)."""
    _meter().create_counter("ticketflow_state_transitions", "ticket state changes").add(
        1, {"state": new_state.value, "stage": stage or "none"}
    )


def record_iteration() -> None:
    """One more round of the fix loop (agent -> checks -> review)."""
    _meter().create_counter("ticketflow_fix_iterations", "fix-loop rounds started after a failure").add(1)


def record_test_gate(outcome: str, result: str) -> None:
    """A ticket the test gate stopped (result "blocked": env_error, no_tests, no_command) or let through
    untested (result "untested_pr": a draft PR labelled untested, where the repository allows it)."""
    _meter().create_counter(
        "ticketflow_test_gate",
        "tickets blocked on their test environment or with no test, or opened untested",
    ).add(1, {"outcome": outcome, "result": result})


def record_finished(outcome: TicketState, status: TicketStatus | None, now: datetime) -> None:
    """A ticket reached a final state: count it, and record how long it took and where the time went."""
    meter = _meter()
    meter.create_counter("ticketflow_tickets_finished", "tickets that reached a final state").add(
        1, {"outcome": outcome.value}
    )
    if status is None:
        return
    if status.started_at is not None:
        meter.create_histogram_float(
            "ticketflow_ticket_duration_seconds", "submit to final state", "s"
        ).record((now - status.started_at).total_seconds(), {"outcome": outcome.value})
    stage_seconds = meter.create_histogram_float(
        "ticketflow_stage_seconds", "time spent in each stage's activity per ticket", "s"
    )
    for stage, seconds in status.timings.items():
        stage_seconds.record(max(seconds, 0.0), {"stage": stage})
    meter.create_histogram("ticketflow_ticket_iterations", "fix-loop iterations per ticket").record(
        max(status.iteration, 0), {"outcome": outcome.value}
    )
    waits = meter.create_histogram_float(
        "ticketflow_wait_seconds", "time a ticket spent waiting, by what it waited on", "s"
    )
    for kind, seconds in waiting_seconds(status.events, now).items():
        waits.record(seconds, {"waiting_on": kind})


def waiting_seconds(events: Iterable[StatusEvent], end: datetime) -> dict[str, float]:
    """Seconds spent in each waiting state, from the status' event log (one entry per transition)."""
    totals = dict.fromkeys(WAIT_KINDS.values(), 0.0)
    ordered = list(events)
    for event, following in zip(ordered, [*ordered[1:], None], strict=True):
        kind = WAIT_KINDS.get(event.state)
        if kind is not None:
            until = following.at if following is not None else end
            totals[kind] += max((until - event.at).total_seconds(), 0.0)
    return totals


def trace_id() -> str | None:
    """The OpenTelemetry trace id the client started this ticket under (32 hex digits), if traced.

    Read from the workflow's start headers, so it is deterministic and needs no OpenTelemetry import.
    """
    header = workflow.info().headers.get(TRACE_HEADER)
    if header is None:
        return None
    try:
        carrier = PayloadConverter.default.from_payloads([header])[0]
    except Exception:
        return None
    parent = carrier.get("traceparent", "") if isinstance(carrier, dict) else ""
    parts = str(parent).split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _outcome_of_failure(err: BaseException) -> TicketState | None:
    if isinstance(err, workflow.ContinueAsNewError):
        return None  # the same ticket goes on in a new run
    if isinstance(err, asyncio.CancelledError | CancelledError):
        return TicketState.CANCELLED
    return TicketState.FAILED


def _status_from_failure(err: BaseException) -> TicketStatus | None:
    """A FAILED ticket carries its next run's input (with its status) in the failure details."""
    if not isinstance(err, ApplicationError) or not err.details:
        return None
    try:
        carry = err.details[0].get("carry") or {}
        return TicketStatus.model_validate(carry["status"])
    except Exception:
        return None


class _TicketMetricsInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if workflow.info().workflow_type != WORKFLOW_TYPE:
            return await super().execute_workflow(input)  # limit gates, intake: not tickets
        if workflow.info().continued_run_id is None:
            record_started()
        try:
            result = await super().execute_workflow(input)
        except (Exception, asyncio.CancelledError) as err:
            # Only the run's own ends: an eviction from the worker's cache (a BaseException the SDK
            # throws into the coroutine) is not an outcome, and there is no workflow clock then.
            outcome = _outcome_of_failure(err)
            if outcome is not None:
                _safely(record_finished, outcome, _status_from_failure(err))
            raise
        if isinstance(result, TicketResult):
            _safely(record_finished, result.state, result.status)
        return result


Recorder = Callable[[TicketState, TicketStatus | None, datetime], None]


def _safely(record: Recorder, outcome: TicketState, status: TicketStatus | None) -> None:
    """A metric must never change how a ticket ends."""
    try:
        record(outcome, status, workflow.now())
    except Exception:
        workflow.logger.warning("could not record ticket metrics", exc_info=True)


class TicketMetricsInterceptor(Interceptor):
    """Worker interceptor: per-ticket metrics without touching the workflow's own code."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _TicketMetricsInbound

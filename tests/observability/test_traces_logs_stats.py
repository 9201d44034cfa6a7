"""Tickets run on a traced worker: one trace per ticket, JSON log lines with ticket context,
`ticketflow watch` rows and `ticketflow stats` over the finished tickets."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from activities.pr_body import render_pr_body
from clients import stats, tickets, watch
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.observability.conftest import MetricsWorker
from workers.logging_setup import JsonFormatter, TextFormatter, setup_logging
from workers.tracing import setup_tracing
from workflows import metrics
from workflows.contracts import (
    Classification,
    PullRequestRequest,
    Ticket,
    TicketState,
    Workspace,
)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    setup_tracing("ticketflow-test", extra=SimpleSpanProcessor(exporter))
    yield exporter


@workflow.defn(sandboxed=False)
class TraceIdWorkflow:
    @workflow.run
    async def run(self) -> str | None:
        return metrics.trace_id()


async def test_tickets_are_traced_logged_watched_and_counted(
    metrics_worker: MetricsWorker, spans: InMemorySpanExporter
) -> None:
    w = metrics_worker
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(JsonFormatter())
    logging.getLogger("temporalio").addHandler(capture)
    try:
        done = example_ticket("demo-1-multiply.md", id="trace-done")
        blocked = example_ticket("demo-5-rounding.md", id="trace-blocked")
        fails = example_ticket("demo-5-rounding.md", id="trace-fails")
        await submit(w.client, w.settings, done)
        await submit(w.client, w.settings, blocked)
        w.settings.blocked_timeout_seconds = 1  # this one gives up waiting for a human: FAILED
        await submit(w.client, w.settings, fails)
        assert (await result_of(w.client, done.id)).state is TicketState.DONE
        await wait_for_status(w.client, blocked.id, in_state(TicketState.BLOCKED))
        with pytest.raises(WorkflowFailureError) as failed:
            await result_of(w.client, fails.id)
        assert "with no answer" in str(failed.value.cause)

        # watch: one row per ticket, from visibility plus the running ones' status.
        rows = {r.ticket_id: r for r in await watch.collect_rows(w.client, ids={done.id, blocked.id})}
        assert set(rows) == {done.id, blocked.id}
        assert rows[blocked.id].state == "BLOCKED" and rows[blocked.id].stage == "run_agent"
        assert rows[blocked.id].iteration == "1/3" and "banker" in rows[blocked.id].note
        assert rows[done.id].state == "DONE"
        await tickets.cancel(w.client, blocked.id, "not needed")
        assert (await result_of(w.client, blocked.id)).state is TicketState.CANCELLED
    finally:
        logging.getLogger("temporalio").removeHandler(capture)

    # One trace per ticket: the client's start, the workflow run and its activities share a trace id.
    finished = spans.get_finished_spans()
    start = next(s for s in finished if s.name == "StartWorkflow:TicketWorkflow" and _attr(s, done.id))
    trace_id = start.context.trace_id
    in_trace = {s.name for s in finished if s.context.trace_id == trace_id}
    assert {"RunWorkflow:TicketWorkflow", "RunActivity:run_agent", "RunActivity:open_pr"} <= in_trace

    # Log lines are JSON with the ticket's context (Temporal's workflow logger adds it).
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    warning = next(
        entry for entry in logged if "is blocked" in entry["msg"] and entry.get("ticket_id") == blocked.id
    )
    assert (
        warning["workflow_id"] == f"ticket-{blocked.id}"
        and warning["run_id"]
        and warning["level"] == "warning"
    )

    # stats: over this test's task queue only (the dev server is shared by the whole session).
    result = await stats.collect(w.client, "1h", task_queue=w.settings.task_queue)
    assert (result.tickets, result.done, result.failed, result.cancelled) == (3, 1, 1, 1)
    assert result.success_rate == pytest.approx(1 / 3, abs=1e-3)
    assert result.median_done_duration_seconds is not None
    assert result.by_model["demo-model"].tokens == 1500 and result.by_model["demo-model"].cost_usd == 0.0125
    assert result.by_agent["demo"].tickets == 3
    assert result.by_kind and result.top_failure_reason and "with no answer" in result.top_failure_reason
    assert "success rate 33%" in stats.render_text(result)


def _attr(span: object, ticket_id: str) -> bool:
    attributes = getattr(span, "attributes", None) or {}
    return attributes.get("temporalWorkflowID") == f"ticket-{ticket_id}"


async def test_workflow_reads_its_trace_id_from_the_start_headers(
    metrics_worker: MetricsWorker, spans: InMemorySpanExporter
) -> None:
    client = metrics_worker.client
    queue = f"trace-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[TraceIdWorkflow]):
        seen = await client.execute_workflow(TraceIdWorkflow.run, id=f"trace-{queue}", task_queue=queue)
    start = next(s for s in spans.get_finished_spans() if _attr_raw(s, f"trace-{queue}"))
    assert seen == format(start.context.trace_id, "032x")


def _attr_raw(span: object, workflow_id: str) -> bool:
    attributes = getattr(span, "attributes", None) or {}
    return attributes.get("temporalWorkflowID") == workflow_id


def test_pr_body_names_the_trace() -> None:
    ticket = Ticket(id="T-1", title="Fix login", body="b", repo="r")
    workspace = Workspace(
        path="/w", branch=ticket.branch, base_branch="main", base_commit="a", repo_url="r", host_queue="q"
    )
    request = PullRequestRequest(
        ticket=ticket, workspace=workspace, classification=Classification(), trace_id="ab" * 16
    )
    assert f"Trace: `{'ab' * 16}`" in render_pr_body(request, "http://ui")


def test_log_lines_carry_the_activity_context_and_hide_secrets() -> None:
    record = logging.LogRecord(
        "temporalio.activity", logging.INFO, __file__, 1, "pushing with ghp_" + "x" * 30, None, None
    )
    record.temporal_activity = {
        "activity_type": "open_pr",
        "attempt": 2,
        "workflow_id": "ticket-PAY-12",
        "workflow_run_id": "run-1",
    }
    record.model = "qwen2.5-coder"
    line = json.loads(JsonFormatter(lambda text: text.replace("ghp_" + "x" * 30, "***")).format(record))
    assert line["ticket_id"] == "PAY-12" and line["stage"] == "open_pr" and line["attempt"] == 2
    assert line["run_id"] == "run-1" and line["model"] == "qwen2.5-coder" and "ghp_" not in line["msg"]
    text = TextFormatter().format(record)
    assert "[PAY-12 open_pr #2 qwen2.5-coder]" in text

    out = io.StringIO()  # not a TTY: JSON; the configured secret and well-known token shapes are masked
    handler = setup_logging("auto", "INFO", stream=out, secrets=["hunter2-secret"])
    try:
        logging.getLogger("ticketflow.test").info("token hunter2-secret and ghp_%s", "y" * 30)
    finally:
        logging.getLogger().removeHandler(handler)
    logged = json.loads(out.getvalue().splitlines()[-1])
    assert logged["msg"] == "token *** and ***"


def test_watch_table_renders_rows_in_place() -> None:
    from rich.console import Console

    rows = [
        watch.WatchRow("PAY-12", "BLOCKED", "run_agent", "qwen", "2/3", 3725.0, "Fix rounding", "half-up?"),
        watch.WatchRow("PAY-13", "DONE", None, None, "", 61.0, "Add a test", "https://pr/1"),
    ]
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(watch.render(rows))
    table = out.getvalue()
    assert "ticketflow: 2 ticket(s)" in table
    assert "PAY-12" in table and "BLOCKED" in table and "1h02m" in table and "half-up?" in table
    assert watch.human_seconds(61) == "1m01s" and watch.human_seconds(None) == "-"
    assert watch.human_seconds(2 * 86400 + 3600) == "2d01h"

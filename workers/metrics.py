"""The worker's /metrics: the Temporal SDK's own metrics and ticketflow's, on one Prometheus endpoint.

Every ticketflow metric goes through a Temporal metric meter (activity.metric_meter() here,
workflow.metric_meter() in workflows/metrics.py, the runtime's meter in the health server), so the SDK's
Prometheus exporter serves all of them and each carries namespace/task_queue labels. A Runtime is one
per process and must exist before the client connects (clients/connect.py takes it).
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows.contracts import AgentResult, CheckReport, Classification, ReviewReport, TokenUsage
from workflows.metrics import TicketMetricsInterceptor

SECONDS_BUCKETS: list[float] = [
    1,
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    43200,
    86400,
    604800,
]
USD_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25]
BUCKETS: dict[str, list[float]] = {
    "ticketflow_ticket_duration_seconds": SECONDS_BUCKETS,
    "ticketflow_stage_seconds": SECONDS_BUCKETS,
    "ticketflow_wait_seconds": SECONDS_BUCKETS,
    "ticketflow_agent_run_seconds": SECONDS_BUCKETS,
    "ticketflow_llm_cost_usd": USD_BUCKETS,
    "ticketflow_ticket_iterations": [1.0, 2, 3, 4, 5, 7, 10, 15, 20],
}

_runtime: Runtime | None = None
log = logging.getLogger("ticketflow.metrics")


def metrics_runtime(bind_address: str) -> Runtime | None:
    """The process' one Runtime with a Prometheus endpoint (None when off or the port is taken: the
    worker runs on without metrics and says so); later calls return the same one."""
    global _runtime
    if _runtime is None and bind_address:
        try:
            _runtime = Runtime(
                telemetry=TelemetryConfig(
                    metrics=PrometheusConfig(bind_address=bind_address, histogram_bucket_overrides=BUCKETS),
                    global_tags={"service": "ticketflow-worker"},
                )
            )
        except Exception as exc:
            log.warning("no /metrics on %s: %s", bind_address, exc)
            return None
        log.info("metrics on http://%s/metrics", bind_address)
    return _runtime


# ------------------------------------------------------------------------------- activity metrics


def record_llm_usage(stage: str, model: str | None, tokens: TokenUsage, outcome: str = "ok") -> None:
    """One model call (or a batch of them) of an activity: calls, tokens and cost by model.

    Adapters that talk to LLMs may call this directly; results that name a model are counted by
    the worker interceptor below.
    """
    meter = activity.metric_meter()
    labels = {"stage": stage, "model": model or "unknown", "outcome": outcome}
    meter.create_counter("ticketflow_llm_calls", "model calls by stage, model and outcome").add(1, labels)
    tokens_counter = meter.create_counter("ticketflow_llm_tokens", "tokens by model and direction")
    for direction, count in (("prompt", tokens.prompt), ("completion", tokens.completion)):
        if count > 0:
            tokens_counter.add(count, {"model": labels["model"], "direction": direction})
    if tokens.cost_usd > 0:
        meter.create_histogram_float("ticketflow_llm_cost_usd", "cost of model calls in USD", "USD").record(
            tokens.cost_usd, {"model": labels["model"]}
        )


def record_agent_result(result: AgentResult) -> None:
    meter = activity.metric_meter()
    labels = {"agent": result.agent or "unknown", "model": result.model or "none", "outcome": result.outcome}
    meter.create_counter("ticketflow_agent_runs", "agent runs by agent, model and outcome").add(1, labels)
    meter.create_histogram_float("ticketflow_agent_run_seconds", "agent run time", "s").record(
        max(result.duration_seconds, 0.0), labels
    )
    if result.model or result.tokens.total:
        record_llm_usage("code", result.model or f"agent:{result.agent}", result.tokens, result.outcome)


def record_sandbox_degraded(reason: str) -> None:
    """A sandboxed run that lacks a protection this host cannot give (reason: bwrap, network, cgroup,
    tmp_size); the sandbox also logs a loud warning. Outside an activity it goes to the worker's runtime."""
    if activity.in_activity():
        meter = activity.metric_meter()
    elif _runtime is not None:
        meter = _runtime.metric_meter
    else:
        return
    meter.create_counter(
        "ticketflow_sandbox_degraded", "sandboxed runs without a protection, by the missing one"
    ).add(1, {"reason": reason})


def record_check_report(report: CheckReport) -> None:
    """One test run by its outcome: passed, failed, timed_out, no_tests, no_command, env_error."""
    activity.metric_meter().create_counter("ticketflow_checks", "test runs by outcome").add(
        1, {"outcome": report.verdict.value}
    )


def _record_result(result: Any) -> None:
    if isinstance(result, AgentResult):
        record_agent_result(result)
    elif isinstance(result, CheckReport):
        record_check_report(result)
    elif isinstance(result, Classification | ReviewReport) and result.model:
        stage = "classify" if isinstance(result, Classification) else "review"
        record_llm_usage(stage, result.model, result.tokens)


class _ActivityMetricsInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await super().execute_activity(input)
        try:
            _record_result(result)
        except Exception:  # a metric must never fail the activity it describes
            activity.logger.exception("recording metrics failed")
        return result


class MetricsInterceptor(Interceptor):
    """Worker interceptor: activity results become metrics; workflows get TicketMetricsInterceptor's."""

    def __init__(self) -> None:
        self._workflows = TicketMetricsInterceptor()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetricsInbound(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return self._workflows.workflow_interceptor_class(input)

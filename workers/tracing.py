"""OpenTelemetry tracing for the CLI and the worker.

The TracingInterceptor (temporalio.contrib.opentelemetry) on the client makes a span for every start,
update and query, and carries its context in Temporal headers to the workflow and its activities, so a
ticket is one trace from `ticketflow submit` to the PR. A real TracerProvider is always installed, so
every ticket gets a trace id (it goes into the ticket's status and PR body, and links logs to traces);
spans are exported over OTLP/HTTP only when OTEL_EXPORTER_OTLP_ENDPOINT (or otlp_endpoint) is set.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import TracingInterceptor

_provider: TracerProvider | None = None


def otlp_endpoint(configured: str | None) -> str | None:
    return configured or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def setup_tracing(
    service_name: str, endpoint: str | None = None, extra: SpanProcessor | None = None
) -> TracerProvider:
    """Install the process' tracer provider once (OpenTelemetry allows one global provider)."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        trace.set_tracer_provider(_provider)
        url = otlp_endpoint(endpoint)
        if url:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter reads OTEL_EXPORTER_OTLP_* itself; an explicit setting names the traces path.
            exporter = OTLPSpanExporter() if not endpoint else OTLPSpanExporter(_traces_url(endpoint))
            _provider.add_span_processor(BatchSpanProcessor(exporter))
    if extra is not None:
        _provider.add_span_processor(extra)
    return _provider


def _traces_url(endpoint: str) -> str:
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def tracing_interceptor() -> TracingInterceptor:
    return TracingInterceptor()


def shutdown_tracing() -> None:
    """Flush spans still in the batch processor (on worker shutdown and CLI exit)."""
    if _provider is not None:
        _provider.force_flush(5000)

"""A real Prometheus scrapes a worker that ran tickets; every dashboard and alert query must work."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from clients import tickets
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from tests.observability.conftest import MetricsWorker, Prometheus, prometheus_binary
from workflows.contracts import TicketState

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ticketflow.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Grafana variables, as Grafana would fill them in for a short time range.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    found = [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]
    assert len(found) >= 20, "the dashboard lost its panels"
    return found


def alert_rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def fill(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unfilled variable in {expr}"
    return expr


def scraped_value(metrics_text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_promtool_checks_config_rules_and_alert_unit_tests() -> None:
    promtool = prometheus_binary("promtool")
    checks = [
        ["check", "rules", str(ALERTS)],
        ["check", "config", str(ALERTS.parent / "prometheus.yml")],
        ["test", "rules", str(ALERTS.parent / "alerts_test.yml")],  # each alert fires when it should
    ]
    for args in checks:
        done = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


async def test_dashboard_and_alert_queries_return_data(
    metrics_worker: MetricsWorker, prometheus_for: Callable[[str], Prometheus]
) -> None:
    w = metrics_worker
    batch = [
        example_ticket("demo-1-multiply.md", id="obs-done"),
        example_ticket("demo-3-power.md", id="obs-fixloop"),
        example_ticket("demo-4-readme.md", id="obs-limit", labels=["limit-once"]),
        example_ticket("demo-5-rounding.md", id="obs-blocked"),
    ]
    prometheus = prometheus_for(w.metrics_url.removeprefix("http://").removesuffix("/metrics"))
    for ticket in batch:
        await submit(w.client, w.settings, ticket)
    for ticket in batch[:3]:
        assert (await result_of(w.client, ticket.id)).state is TicketState.DONE
    await wait_for_status(w.client, "obs-blocked", in_state(TicketState.BLOCKED))
    # A query on finished tickets makes the worker replay them: nothing may be counted twice.
    for ticket in batch[:3]:
        await tickets.status(w.client, ticket.id)

    async with httpx.AsyncClient() as http:
        assert (await http.get(w.health_url + "/healthz")).status_code == 200
        ready = await http.get(w.health_url + "/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert (await http.get(w.health_url + "/nope")).status_code == 404
        text = (await http.get(w.metrics_url)).text
    queue = {"task_queue": w.settings.task_queue}
    assert scraped_value(text, "ticketflow_tickets_started", **queue) == 4
    assert scraped_value(text, "ticketflow_tickets_finished", outcome="DONE", **queue) == 3
    assert scraped_value(text, "ticketflow_agent_runs", outcome="usage_limit") >= 1
    assert scraped_value(text, "ticketflow_llm_tokens", model="demo-model", direction="prompt") >= 3 * 1200
    assert "temporal_workflow_completed" in text  # the SDK's own metrics share the endpoint

    def has(expr: str) -> bool:
        body = prometheus.query(expr)
        return body["status"] == "success" and bool(body["data"]["result"])  # type: ignore[index]

    # Every counter must have been scraped twice, so rate() has two samples, and the gauges refreshed.
    wait_until(lambda: has("count_over_time(ticketflow_tickets_finished[1m]) >= 3"), "three scrapes")
    wait_until(lambda: has('max(ticketflow_tickets_current{state="BLOCKED"}) >= 1'), "the BLOCKED gauge")

    empty, failed = [], []
    for title, expr in dashboard_queries():
        body = prometheus.query(fill(expr))
        if body["status"] != "success":
            failed.append(f"{title}: {expr}: {body.get('error')}")
        elif not body["data"]["result"]:  # type: ignore[index]
            empty.append(f"{title}: {expr}")
    assert not failed, "dashboard queries that fail:\n" + "\n".join(failed)
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    for rule in alert_rules():
        body = prometheus.query(rule["expr"])
        assert body["status"] == "success", f"{rule['alert']}: {body.get('error')}"

    def all_rules_evaluated() -> bool:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]  # type: ignore[index]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == len(alert_rules()) and all(
            r["health"] == "ok" and not r.get("lastError") for r in rules
        )

    wait_until(all_rules_evaluated, "every alert rule evaluated by Prometheus")
    firing = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["data"]["alerts"]}  # type: ignore[index]
    assert "TicketflowWorkerDown" not in firing
    await tickets.cancel(w.client, "obs-blocked", "test over")

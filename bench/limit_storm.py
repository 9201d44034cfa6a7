"""Limit storm: N tickets on one provider that is usage-limited for a few seconds.

Gated side: the real TicketWorkflow on a real ticketflow worker (workers.main.run_workers: the workflows
and activities `ticketflow worker` runs, LimitGate included), submitted like `ticketflow submit`
(clients/tickets.submit). The classify chain is one model on a fake Ollama (tests/fakes/ollama_server.py)
that answers every chat with a usage-limit 429 until the reset; the agent is a `command` agent that
writes one file; the repository is a local bare copy of the example project. Every ticket must end
DONE (worktree, agent, the repo's unit tests, review and a local PR all run for real). The worker has
production's slots by default (Settings' max_concurrent_activities and max_concurrent_llm_activities,
8 and 8; `--slots N` sets both): classify runs on the LLM queue with slots of its own, so released
tickets no longer wait for slots behind other tickets' prepare_workspace (see docs/benchmarks.md).
One warm-up ticket goes first on another provider (so the storm meets a new gate, as in the gate's
design; with `--warm-gate` it opens the storm provider's gate instead and the storm meets an open gate).

Baseline side: TicketWorkflow has no naive mode, so the baseline is a simulated ticket reduced to its
model call (StormTicketWorkflow, through the real OllamaClient) that retries on its own with exponential
backoff (1 s, 2 s, 4 s, ... on a durable workflow timer), against its own fake with the same limit,
in the same process and dev server.

Measured per side: calls the provider received while limited, and seconds from the reset to the last
ticket's first successful model call after it (tickets are told apart by the `Title:` line of the
prompt). Last line: one JSON object. Run: `.venv/bin/python -m bench.limit_storm`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.llm.base import ChatRequest, ModelError
from activities.llm.ollama import OllamaClient
from activities.settings import ModelsConfig, ProviderConfig, Settings
from bench.harness import dev_server, machine, script_agent, worker_settings
from clients import tickets
from clients.example_repo import create_example_remote
from tests.fakes.ollama_server import FakeOllama, Reply, ScriptedModelServer, serve
from workers.main import running_workers
from workflows import policy
from workflows.contracts import GateStatus, Ticket, TicketResult, TicketState
from workflows.limit_gate import USAGE_LIMIT_ERROR, GateClient, LimitGateWorkflow

MODEL = "small:latest"
STORM, WARMUP = "storm", "warmup"  # provider names: one limit gate each
TITLE = re.compile(r"^Title: (.+)$", re.MULTILINE)
CLASSIFICATION = json.dumps(
    {"kind": "feature", "complexity": "low", "risk": "low", "rationale": "one new file"}
)
AGENT = """\
import os, pathlib
root = pathlib.Path(os.environ["TICKETFLOW_WORKTREE"])
(root / "storm_note.txt").write_text("written during a limit storm\\n")
print("::ticketflow step::wrote storm_note.txt", flush=True)
"""


def resumes(fake: ScriptedModelServer, reset: float) -> list[float]:
    """Per ticket, seconds from the reset to its first successful call after it, in order
    (a ticket is the `Title:` line of its prompt)."""
    firsts: dict[str, float] = {}
    for request in fake.chats():
        if request.limited or request.at < reset:
            continue
        prompt = "\n".join(str(m.get("content", "")) for m in request.body.get("messages", []))
        found = TITLE.search(prompt)
        if found:
            firsts.setdefault(found.group(1), request.at - reset)
    return sorted(firsts.values())


def resume_figures(fake: ScriptedModelServer, reset: float) -> dict[str, Any]:
    after = resumes(fake, reset)
    return {
        "reset_to_last_resume_seconds": round(after[-1], 3) if after else float("nan"),
        "reset_to_first_resume_seconds": round(after[0], 3) if after else None,
        "reset_to_median_resume_seconds": round(after[len(after) // 2], 3) if after else None,
        "tickets_resumed_after_reset": len(after),
    }


# ------------------------------------------------------------------------ gated: the real ticket


class Slots(BaseModel):
    """The worker's activity slots: git work (shared and host queues) and model calls (LLM queue)."""

    activities: int
    llm_activities: int


def production_slots() -> Slots:
    """What a worker gets with default Settings."""
    fields = Settings.model_fields
    return Slots(
        activities=fields["max_concurrent_activities"].default,
        llm_activities=fields["max_concurrent_llm_activities"].default,
    )


def storm_settings(client: Client, root: Path, url: str, slots: Slots) -> Settings:
    """A worker's settings: classify on the fake (two providers, so the warm-up has its own gate)."""
    provider = ProviderConfig(base_url=url, num_ctx=8192, connect_timeout_seconds=2, read_timeout_seconds=10)
    models = ModelsConfig(providers={STORM: provider, WARMUP: provider}, classify=[f"{STORM}/{MODEL}"])
    remote = create_example_remote(root / "remotes" / "calc.git")
    agent = script_agent(root / "agents", "note", AGENT)
    return worker_settings(
        client,
        root / "state",
        remote,
        agent,
        models=models,
        max_concurrent_activities=slots.activities,
        max_concurrent_llm_activities=slots.llm_activities,
    )


def storm_ticket(name: str, title: str, provider: str) -> Ticket:
    return Ticket(
        id=f"{name}-{uuid.uuid4().hex[:8]}",
        title=title,
        body="Write storm_note.txt (a one-file change made by a command agent).",
        repo="calc",
        models={"classify": [f"{provider}/{MODEL}"]},
    )


async def submit_and_finish(client: Client, settings: Settings, batch: list[Ticket]) -> list[TicketResult]:
    """Submit like `ticketflow submit` (repository check included), all at once; wait for the results."""
    submitted = await asyncio.gather(*(tickets.submit(client, settings, t) for t in batch))
    if not all(s.started for s in submitted):
        raise RuntimeError(f"not every ticket started: {submitted}")
    results = await asyncio.gather(*(tickets.handle_for(client, t.id).result() for t in batch))
    return [TicketResult.model_validate(r) for r in results]


def held_at_gate(result: TicketResult) -> bool:
    return any(e.state is TicketState.WAITING_FOR_LIMIT for e in result.status.events)


async def gated_storm(
    client: Client, root: Path, *, count: int, limit_seconds: float, warm_gate: bool, slots: Slots
) -> dict[str, Any]:
    fake = FakeOllama(models={MODEL})
    fake.responder = lambda body: Reply(content=CLASSIFICATION)
    with serve(fake):
        settings = storm_settings(client, root, fake.url, slots)
        async with running_workers(client, settings):
            # A running worker is warm: sandbox imports, the repository mirror, the agent's first start.
            warmup = storm_ticket("warmup", "Limit storm warm-up", STORM if warm_gate else WARMUP)
            await submit_and_finish(client, settings, [warmup])
            batch = [
                storm_ticket(f"storm-{i:02d}", f"Limit storm ticket {i:02d}", STORM) for i in range(count)
            ]
            reset = fake.limit_for(limit_seconds)
            started = reset - limit_seconds
            results = await submit_and_finish(client, settings, batch)
            elapsed = time.time() - started
            gate_id = policy.limit_gate_id(STORM, settings.task_queue)
            gate: GateStatus = await client.get_workflow_handle(gate_id).query(LimitGateWorkflow.status)
    storm_calls = [r for r in fake.chats() if r.at >= started]
    states = [r.state.value for r in results]
    return {
        "calls_while_limited": fake.calls_while_limited,
        **resume_figures(fake, reset),
        "tickets_done": states.count(TicketState.DONE.value),
        "states": sorted(set(states)),
        "tickets_shown_waiting_for_limit": sum(held_at_gate(r) for r in results),
        "first_call_after_limit_start_seconds": round(storm_calls[0].at - started, 3)
        if storm_calls
        else None,
        "calls_total": len(storm_calls),
        "gate": gate.model_dump(include={"state", "passes", "probes", "limits_reported", "runs"}),
        "gate_was_new": not warm_gate,
        "activity_slots": settings.max_concurrent_activities,
        "llm_activity_slots": settings.max_concurrent_llm_activities,
        "wall_seconds": round(elapsed, 3),
    }


# ------------------------------------------------------------------- baseline: naive backoff
# StormTicketWorkflow's gated mode is what tests/llm/test_limit_gate.py drives the gate with; the
# bench uses its naive mode only (the gated side is the real TicketWorkflow).


class StormCall(BaseModel):
    url: str
    ticket: str


class StormOutcome(BaseModel):
    limited: bool = False
    reset_at: datetime | None = None


class StormTicket(BaseModel):
    url: str
    provider: str
    ticket: str
    gated: bool
    max_attempts: int = 12


@activity.defn(name="storm_call")
async def storm_call(call: StormCall) -> StormOutcome:
    """One model call through the real Ollama client; a usage limit is data, not an exception."""
    client = OllamaClient("storm", call.url, num_ctx=4096, read_timeout=10)
    try:
        messages = [{"role": "user", "content": f"Title: {call.ticket}\n\nclassify me"}]
        await client.chat(ChatRequest(model=MODEL, messages=messages, max_output_tokens=64))
        return StormOutcome()
    except ModelError as error:
        if error.kind not in ("usage_limit", "rate_limited"):
            raise
        return StormOutcome(limited=True, reset_at=error.reset_at)
    finally:
        await client.aclose()


_CALL_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))


@workflow.defn(sandboxed=False)
class StormTicketWorkflow:
    """A ticket reduced to its model call: gated (pass the LimitGate first) or naive (own backoff)."""

    def __init__(self) -> None:
        self._waited = False

    def _on_wait(self) -> None:
        self._waited = True

    @workflow.query
    def waited(self) -> bool:
        """Whether the gate held this ticket back long enough to say so (WAITING_FOR_LIMIT)."""
        return self._waited

    @workflow.run
    async def run(self, spec: StormTicket) -> int:
        gates = GateClient() if spec.gated else None
        for attempt in range(spec.max_attempts):
            gate_pass = await gates.wait_turn(spec.provider, self._on_wait) if gates else None
            outcome = await workflow.execute_activity(
                storm_call,
                StormCall(url=spec.url, ticket=spec.ticket),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_CALL_RETRY,
            )
            if gates and (outcome.limited or (gate_pass and gate_pass.probe)):
                await gates.report(spec.provider, limited=outcome.limited, reset_at=outcome.reset_at)
            if not outcome.limited:
                return attempt + 1
            if not gates:
                await workflow.sleep(timedelta(seconds=min(30, 2**attempt)))  # the naive baseline
        raise RuntimeError(f"{spec.ticket} never got through")


async def naive_storm(client: Client, *, count: int, limit_seconds: float) -> dict[str, Any]:
    fake = FakeOllama(models={MODEL})
    fake.responder = lambda body: Reply(content="{}")
    queue = f"storm-naive-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[StormTicketWorkflow],
        activities=[storm_call],
        max_concurrent_activities=64,
    )
    with serve(fake):
        async with worker:
            reset = fake.limit_for(limit_seconds)
            started = time.monotonic()
            handles = [
                await client.start_workflow(
                    StormTicketWorkflow.run,
                    StormTicket(url=fake.url, provider="naive", ticket=f"naive ticket {i:02d}", gated=False),
                    id=f"{queue}-{i}",
                    task_queue=queue,
                )
                for i in range(count)
            ]
            attempts = await asyncio.gather(*(h.result() for h in handles))
            elapsed = time.monotonic() - started
    return {
        "calls_while_limited": fake.calls_while_limited,
        **resume_figures(fake, reset),
        "calls_total": len(fake.chats()),
        "max_attempts_per_ticket": max(attempts),
        "wall_seconds": round(elapsed, 3),
    }


# ------------------------------------------------------------------------------------------ run


async def run(count: int, limit_seconds: float, warm_gate: bool, slots: Slots) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench-limit-storm-") as scratch:
        async with dev_server() as env:
            gated = await gated_storm(
                env.client,
                Path(scratch),
                count=count,
                limit_seconds=limit_seconds,
                warm_gate=warm_gate,
                slots=slots,
            )
            print(f"gated:    {gated}", flush=True)
            naive = await naive_storm(env.client, count=count, limit_seconds=limit_seconds)
            print(f"baseline: {naive}", flush=True)
    load_after = round(os.getloadavg()[0], 2)
    hit = gated["gate"]["limits_reported"] >= 1  # else the storm never met the limit: nothing measured
    return {
        "bench": "limit_storm",
        "tickets": count,
        "limit_seconds": limit_seconds,
        "slots": {**slots.model_dump(), "production": slots == production_slots()},
        "driver": {
            "gated": "the real TicketWorkflow on a ticketflow worker (workers.main.running_workers), "
            "classify through the LimitGate to a fake Ollama; agent, checks, review, PR real",
            "baseline": "simulated ticket workflows (one model call via OllamaClient) with per-ticket "
            "exponential backoff; TicketWorkflow has no naive mode",
        },
        "calls_while_limited": gated["calls_while_limited"],
        "reset_to_last_resume_seconds": gated["reset_to_last_resume_seconds"],
        "baseline_calls_while_limited": naive["calls_while_limited"],
        "baseline_reset_to_last_resume_seconds": naive["reset_to_last_resume_seconds"],
        "targets_met": hit
        and gated["tickets_done"] == count
        and gated["tickets_resumed_after_reset"] == count
        and gated["calls_while_limited"] <= 1
        and gated["reset_to_last_resume_seconds"] <= 2,
        "gated": gated,
        "baseline": naive,
        "machine": {**machine(), "load_1m_before": load_before, "load_1m_after": load_after},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class ExpectedLimit(logging.Filter):
    """The probe's refused classify is what this bench provokes: log it without its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ApplicationError) and error.type == USAGE_LIMIT_ERROR:
            record.exc_info, record.exc_text = None, None
        return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=20)
    parser.add_argument("--limit-seconds", type=float, default=4.0)
    parser.add_argument(
        "--warm-gate",
        action="store_true",
        help="the warm-up ticket opens the storm provider's gate first (the storm meets an open gate)",
    )
    default = production_slots()
    parser.add_argument(
        "--slots",
        type=int,
        default=0,
        help="the worker's activity slots, git and LLM alike; default: production's "
        f"({default.activities} and {default.llm_activities})",
    )
    args = parser.parse_args(argv)
    slots = Slots(activities=args.slots, llm_activities=args.slots) if args.slots > 0 else default
    logging.getLogger("temporalio.activity").addFilter(ExpectedLimit())
    figures = asyncio.run(run(args.tickets, args.limit_seconds, args.warm_gate, slots))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()

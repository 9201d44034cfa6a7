"""Limit storm: N tickets on one provider that is usage-limited for a few seconds.

Gated side: each simulated ticket passes the provider's LimitGate workflow (workflows/limit_gate.py)
before its model call and reports what it learned. Baseline side: each ticket retries on its own with
exponential backoff (1 s, 2 s, 4 s, ... on a durable workflow timer), the usual naive approach. Both run
in this process against their own fake Ollama server (tests/fakes/ollama_server.py) and the same dev
server. The tickets here are simulated ticket workflows calling the provider through the real
OllamaClient; TicketWorkflow itself is not wired to the gate yet (see docs/models.md).

Measured per side: calls the provider received while limited, and seconds from the reset to the last
ticket's successful call. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from activities.llm.base import ChatRequest, ModelError
from activities.llm.gate_signal import limit_gate_signal
from activities.llm.ollama import OllamaClient
from bench.harness import dev_server
from tests.fakes.ollama_server import FakeOllama, Reply, ScriptedModelServer, serve
from workflows.limit_gate import GateClient, LimitGateWorkflow

MODEL = "small:latest"


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
        messages = [{"role": "user", "content": f"ticket {call.ticket}: classify me"}]
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


def resume_lag(fake: ScriptedModelServer, reset: float) -> float:
    """Seconds from the reset to the last ticket's first successful call after it."""
    firsts: dict[str, float] = {}
    for request in fake.chats():
        if request.limited or request.at < reset:
            continue
        ticket = str(request.body["messages"][0]["content"]).split(":")[0]
        firsts.setdefault(ticket, request.at)
    return round(max(firsts.values()) - reset, 3) if firsts else float("nan")


async def storm(
    client: Client, queue: str, *, gated: bool, tickets: int, limit_seconds: float
) -> dict[str, Any]:
    fake = FakeOllama(models={MODEL})
    fake.responder = lambda body: Reply(content="{}")
    with serve(fake):
        provider = f"storm-{uuid.uuid4().hex[:6]}"
        reset = fake.limit_for(limit_seconds)
        started = time.monotonic()
        handles = [
            await client.start_workflow(
                StormTicketWorkflow.run,
                StormTicket(url=fake.url, provider=provider, ticket=f"t{i}", gated=gated),
                id=f"storm-{provider}-{i}",
                task_queue=queue,
            )
            for i in range(tickets)
        ]
        attempts = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.monotonic() - started
        return {
            "calls_while_limited": fake.calls_while_limited,
            "reset_to_last_resume_seconds": resume_lag(fake, reset),
            "calls_total": len(fake.chats()),
            "max_attempts_per_ticket": max(attempts),
            "wall_seconds": round(elapsed, 3),
        }


async def run(tickets: int, limit_seconds: float) -> dict[str, Any]:
    async with dev_server() as env:
        queue = f"storm-{uuid.uuid4().hex[:8]}"
        worker = Worker(
            env.client,
            task_queue=queue,
            workflows=[StormTicketWorkflow, LimitGateWorkflow],
            activities=[storm_call, limit_gate_signal],
            max_concurrent_activities=64,
        )
        async with worker:
            gated = await storm(env.client, queue, gated=True, tickets=tickets, limit_seconds=limit_seconds)
            print(f"gated:    {gated}", flush=True)
            naive = await storm(env.client, queue, gated=False, tickets=tickets, limit_seconds=limit_seconds)
            print(f"baseline: {naive}", flush=True)
    return {
        "bench": "limit_storm",
        "tickets": tickets,
        "limit_seconds": limit_seconds,
        "driver": "simulated ticket workflows on the LimitGate (TicketWorkflow not wired to the gate yet)",
        "calls_while_limited": gated["calls_while_limited"],
        "reset_to_last_resume_seconds": gated["reset_to_last_resume_seconds"],
        "baseline_calls_while_limited": naive["calls_while_limited"],
        "baseline_reset_to_last_resume_seconds": naive["reset_to_last_resume_seconds"],
        "targets_met": gated["calls_while_limited"] <= 1 and gated["reset_to_last_resume_seconds"] <= 2,
        "gated": gated,
        "baseline": naive,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=20)
    parser.add_argument("--limit-seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.tickets, args.limit_seconds))))


if __name__ == "__main__":
    main()

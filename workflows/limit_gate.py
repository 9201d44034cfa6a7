"""LimitGate: one entity workflow per model provider, shared by every ticket that calls it.

Once one ticket learns the provider is limited until T, every ticket asking to call it waits until T
without calling; after T exactly one of them (the probe) calls first; when it reports that the provider
answered, all the others are let through at once. A new gate starts in the probing state, so a burst
of tickets arriving at an already limited provider costs one refused call, not one per ticket.

Protocol (all signals, so tickets never block on the gate's history):
  ticket -> gate   `request_turn(GateTurn)`, `report(GateReport)`  (via the limit_gate_signal local
                   activity: signal-with-start, so the gate exists as soon as someone needs it)
  gate -> ticket   `limit_gate_pass(GatePass)` to the asking workflow (GateClient receives it)
The gate continues as new past policy.GATE_HISTORY_EVENT_LIMIT events, carrying its GateStatus.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import policy
    from workflows.contracts import GatePass, GateReport, GateSignal, GateStatus, GateTurn

T = TypeVar("T")
# ApplicationError.type of a stage that hit a usage limit (activities/llm/chains.USAGE_LIMIT_ERROR).
USAGE_LIMIT_ERROR = "UsageLimit"


# A pass that has not come after this long means the gate holds the ticket back: say so.
GATE_NOTICE = timedelta(seconds=2)


@workflow.defn(name=policy.LIMIT_GATE_WORKFLOW_TYPE)
class LimitGateWorkflow:
    @workflow.init
    def __init__(self, status: GateStatus) -> None:
        self._status = status.model_copy(deep=True)
        self._outbox: list[tuple[str, GatePass]] = []
        self._changed = False

    @workflow.run
    async def run(self, status: GateStatus) -> None:
        while True:
            await self._flush()
            await self._advance()
            if self._should_continue_as_new():
                await self._flush()
                await workflow.wait_condition(workflow.all_handlers_finished)
                carry = self._status.model_copy(update={"runs": self._status.runs + 1})
                workflow.continue_as_new(carry)

    # ------------------------------------------------------------------------------- state machine

    async def _advance(self) -> None:
        status = self._status
        now = workflow.now()
        if status.state == "limited" and status.limited_until is not None and now < status.limited_until:
            await self._wait(status.limited_until - now, "limited until the reset")
            return
        if status.state == "limited":
            self._begin_probing()
            return
        if status.state == "probing" and status.probe is not None and status.probe_since is not None:
            deadline = status.probe_since + policy.GATE_PROBE_TIMEOUT
            if now >= deadline:
                workflow.logger.warning("probe %s of %s went silent", status.probe, status.provider)
                status.probe = None
                self._begin_probing()
                return
            await self._wait(deadline - now, "the probe's verdict")
            return
        await self._wait(None, "tickets")

    async def _wait(self, timeout: timedelta | None, what: str) -> None:
        self._changed = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._changed or bool(self._outbox),
                timeout=timeout,
                timeout_summary=f"waiting for {what}",
            )

    def _begin_probing(self) -> None:
        status = self._status
        status.state = "probing"
        status.probe = None
        if status.waiting:
            self._make_probe(status.waiting.pop(0))

    def _make_probe(self, workflow_id: str) -> None:
        status = self._status
        status.probe, status.probe_since = workflow_id, workflow.now()
        status.probes += 1
        self._send(workflow_id, probe=True)

    def _release_all(self) -> None:
        status = self._status
        status.state, status.probe, status.probe_since, status.limited_until = "open", None, None, None
        for waiting in status.waiting:
            self._send(waiting)
        status.waiting = []

    def _send(self, workflow_id: str, *, probe: bool = False) -> None:
        status = self._status
        status.passes += 1
        self._outbox.append(
            (workflow_id, GatePass(provider=status.provider, probe=probe, limited_until=status.limited_until))
        )

    async def _flush(self) -> None:
        """Deliver the passes; a ticket that has ended meanwhile must not stop the gate."""
        while self._outbox:
            batch, self._outbox = self._outbox, []
            results = await asyncio.gather(
                *(
                    workflow.get_external_workflow_handle(target).signal(
                        policy.LIMIT_GATE_PASS_SIGNAL, gate_pass
                    )
                    for target, gate_pass in batch
                ),
                return_exceptions=True,
            )
            for (target, _), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    workflow.logger.info("pass to %s not delivered: %s", target, result)
                    if self._status.probe == target:
                        self._status.probe = None
                        self._begin_probing()

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        too_long = info.get_current_history_length() >= policy.GATE_HISTORY_EVENT_LIMIT
        return too_long or info.is_continue_as_new_suggested()

    # ---------------------------------------------------------------------------------- messages

    @workflow.signal(name="request_turn", description="A ticket wants to call the provider")
    def request_turn(self, turn: GateTurn) -> None:
        status = self._status
        self._changed = True
        if status.state == "open":
            self._send(turn.workflow_id)
        elif status.state == "probing" and status.probe in (None, turn.workflow_id):
            self._make_probe(turn.workflow_id)
        elif turn.workflow_id not in status.waiting:
            status.waiting.append(turn.workflow_id)

    @workflow.signal(name="report", description="What a ticket learned from calling the provider")
    def report(self, report: GateReport) -> None:
        status = self._status
        self._changed = True
        if report.limited:
            until = report.reset_at or workflow.now() + policy.GATE_DEFAULT_LIMIT
            status.limited_until = max(until, status.limited_until) if status.limited_until else until
            status.state, status.probe, status.probe_since = "limited", None, None
            status.limits_reported += 1
            return
        # A success only counts once the reset has passed: a call that started before the limit
        # was reported says nothing about now.
        if status.state == "probing" or (status.state == "limited" and self._reset_passed()):
            self._release_all()

    def _reset_passed(self) -> bool:
        until = self._status.limited_until
        return until is None or workflow.now() >= until

    @workflow.query(name="status", description="The gate's state, waiters and counters")
    def status(self) -> GateStatus:
        return self._status


class GateClient:
    """The ticket side, used inside a workflow: ask for a turn, wait for the pass, report back.

    Create it inside the workflow (it registers the pass signal handler), then per model-backed stage:
        gate_pass = await gates.wait_turn(provider)       # returns at once when the gate is open
        ... run the stage ...
        await gates.report(provider, limited=..., reset_at=...)   # always after a probe or a limit
    """

    def __init__(self) -> None:
        self._passes: dict[str, GatePass] = {}
        self._known: set[str] = set()  # gates this run has started or reached: signal them directly
        workflow.set_signal_handler(policy.LIMIT_GATE_PASS_SIGNAL, self._on_pass)

    def _on_pass(self, gate_pass: GatePass) -> None:
        self._passes[gate_pass.provider] = gate_pass

    async def wait_turn(self, provider: str, on_wait: Callable[[], None] | None = None) -> GatePass:
        """Return once the gate lets this workflow call `provider`; `on_wait` runs if that takes a while
        (the ticket shows WAITING_FOR_LIMIT instead of its stage)."""
        self._passes.pop(provider, None)
        turn = GateTurn(provider=provider, workflow_id=workflow.info().workflow_id)
        if provider not in self._known or not await _signal_gate(provider, "request_turn", turn):
            await _signal_with_start(GateSignal(turn=turn))  # the gate may not exist yet: start it
            self._known.add(provider)
        arrived = lambda: provider in self._passes  # noqa: E731
        if on_wait is not None:
            try:
                await workflow.wait_condition(
                    arrived, timeout=GATE_NOTICE, timeout_summary=f"gate of {provider}"
                )
            except TimeoutError:
                on_wait()
        await workflow.wait_condition(arrived, timeout_summary=f"gate of {provider}")
        return self._passes.pop(provider)

    async def report(
        self, provider: str, *, limited: bool, reset_at: datetime | None = None, reason: str = ""
    ) -> None:
        report = GateReport(
            provider=provider,
            workflow_id=workflow.info().workflow_id,
            limited=limited,
            reset_at=reset_at,
            reason=reason[:300],
        )
        if not await _signal_gate(provider, "report", report):
            await _signal_with_start(GateSignal(report=report))


@dataclass
class LimitHit:
    """A usage limit a stage ran into: which provider, until when."""

    provider: str
    reset_at: datetime | None
    reason: str


def usage_limit_of(err: ActivityError) -> LimitHit | None:
    """The UsageLimit failure of classify/review (activities/llm/chains.py puts the details there)."""
    cause = err.cause
    if not isinstance(cause, ApplicationError) or cause.type != USAGE_LIMIT_ERROR or not cause.details:
        return None
    info = cause.details[0] if isinstance(cause.details[0], dict) else {}
    reset = info.get("reset_at")
    provider = str(info.get("provider") or "")
    if not provider:
        return None
    return LimitHit(provider, datetime.fromisoformat(reset) if reset else None, str(info.get("reason", "")))


async def call_through_gates(
    gates: GateClient,
    providers: list[str],
    call: Callable[[], Awaitable[T]],
    on_wait: Callable[[], None] | None = None,
    limit_in: Callable[[T], LimitHit | None] = lambda _: None,
) -> T:
    """Run one model-backed stage behind the gates of its providers.

    Waits for a pass from each gate (at once when open), runs `call`, and tells a gate what happened
    whenever this ticket was its probe or hit its limit. A usage limit is re-raised as the ActivityError
    it was (classify, review) or returned (`limit_in(result)`, e.g. the agent's usage_limit outcome); the
    caller retries the stage, which then waits at the gate until the reset.
    """
    passes = {provider: await gates.wait_turn(provider, on_wait) for provider in providers}
    try:
        result = await call()
    except ActivityError as err:
        hit = usage_limit_of(err)
        if hit is not None and hit.provider in passes:
            await gates.report(hit.provider, limited=True, reset_at=hit.reset_at, reason=hit.reason)
            passes.pop(hit.provider)
        await _release_probes(gates, passes)
        raise
    hit = limit_in(result)
    if hit is not None and hit.provider in passes:
        await gates.report(hit.provider, limited=True, reset_at=hit.reset_at, reason=hit.reason)
        passes.pop(hit.provider)
    await _release_probes(gates, passes)
    return result


async def _release_probes(gates: GateClient, passes: dict[str, GatePass]) -> None:
    """A probe that got an answer (any answer but a limit) opens its gate for everyone."""
    for provider, gate_pass in passes.items():
        if gate_pass.probe:
            await gates.report(provider, limited=False)


async def _signal_gate(provider: str, name: str, message: GateTurn | GateReport) -> bool:
    """A direct workflow-to-workflow signal (one command, no activity); False if the gate is gone."""
    gate_id = policy.limit_gate_id(provider, workflow.info().task_queue)
    handle = workflow.get_external_workflow_handle(gate_id)
    try:
        await handle.signal(name, message)
    except Exception as exc:  # the SDK raises a plain failure when the target is not running
        workflow.logger.info("gate %s not reachable by signal (%s); starting it", provider, exc)
        return False
    return True


async def _signal_with_start(message: GateSignal) -> None:
    spec = policy.LIMIT_GATE_SIGNAL
    await workflow.execute_local_activity(
        spec.name, message, start_to_close_timeout=spec.start_to_close, retry_policy=spec.retry
    )


__all__ = ["GateClient", "LimitGateWorkflow", "LimitHit", "call_through_gates", "usage_limit_of"]

"""limit_gate_signal: deliver a ticket's message to its provider's limit gate, starting the gate if needed.

Workflows cannot signal-with-start, so this (local) activity does it; the gate runs on the queue the
asking workflow runs on.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy

from workflows import policy
from workflows.contracts import GateSignal, GateStatus


@activity.defn(name=policy.LIMIT_GATE_SIGNAL.name)
async def limit_gate_signal(message: GateSignal) -> None:
    if message.turn is not None:
        provider, name, payload = message.turn.provider, "request_turn", message.turn.model_dump(mode="json")
    elif message.report is not None:
        provider, name, payload = message.report.provider, "report", message.report.model_dump(mode="json")
    else:
        raise ValueError("a gate signal needs a turn or a report")
    await activity.client().start_workflow(
        policy.LIMIT_GATE_WORKFLOW_TYPE,
        GateStatus(provider=provider),
        id=policy.limit_gate_id(provider, activity.info().task_queue),
        task_queue=activity.info().task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=name,
        start_signal_args=[payload],
    )

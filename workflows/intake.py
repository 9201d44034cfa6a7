"""IntakeWorkflow: one poll of the configured ticket sources, started by the intake Schedule.

It only runs the poll_sources activity, so a poll that fails shows up as a failed run in the Web UI
(and the Schedule's recent actions) without ever touching the ticket workflows it starts.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import policy
    from workflows.contracts import IntakePollRequest, IntakePollResult


@workflow.defn(name=policy.INTAKE_WORKFLOW_TYPE)
class IntakeWorkflow:
    @workflow.run
    async def run(self, request: IntakePollRequest) -> IntakePollResult:
        spec = policy.POLL_SOURCES
        result: IntakePollResult = await workflow.execute_activity(
            spec.name,
            request,
            result_type=IntakePollResult,
            start_to_close_timeout=spec.start_to_close,
            retry_policy=spec.retry,
            summary=f"poll {len(request.sources)} source(s)",
        )
        return result

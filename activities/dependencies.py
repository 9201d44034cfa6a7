"""dependency_states: where the tickets a ticket depends on stand, read from Temporal visibility."""

from __future__ import annotations

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from workflows.contracts import MISSING_TICKET, DependencyRequest, DependencyStates, workflow_id_for
from workflows.visibility import TICKET_STATE


@activity.defn(name="dependency_states")
async def dependency_states(req: DependencyRequest) -> DependencyStates:
    client = activity.client()
    states: dict[str, str] = {}
    for ticket_id in req.ticket_ids:
        try:
            description = await client.get_workflow_handle(workflow_id_for(ticket_id)).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            states[ticket_id] = MISSING_TICKET
            continue
        states[ticket_id] = description.typed_search_attributes.get(TICKET_STATE) or MISSING_TICKET
    return DependencyStates(states=states)

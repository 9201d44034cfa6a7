"""A ticket tells the notification targets when it is BLOCKED and DONE, and carries its trace id into
its status and PR body (the workflow side of activities/notify.py and workers/tracing.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from clients import tickets
from tests.helpers import example_ticket, in_state, local_prs, result_of, submit, wait_for_status
from tests.observability.conftest import MetricsWorker, Receiver
from tests.observability.test_notify import targets
from workers.tracing import setup_tracing
from workflows.contracts import TicketState


async def test_blocked_and_done_are_notified_with_the_trace_id(
    metrics_worker: MetricsWorker, receiver: Receiver, example_remote: Path
) -> None:
    setup_tracing("ticketflow-test")
    w = metrics_worker
    w.settings.notify = targets(receiver)[:1]  # the JSON webhook
    ticket = example_ticket("demo-5-rounding.md", id="notify-me")
    await submit(w.client, w.settings, ticket)
    blocked = await wait_for_status(w.client, ticket.id, in_state(TicketState.BLOCKED))
    assert blocked.trace_id and re.fullmatch(r"[0-9a-f]{32}", blocked.trace_id)

    await tickets.unblock(w.client, ticket.id, "round half away from zero")
    result = await result_of(w.client, ticket.id)
    assert result.state is TicketState.DONE

    events = [json.loads(r.body) for r in receiver.requests]
    assert [e["state"] for e in events] == ["BLOCKED", "DONE"]
    assert "banker" in events[0]["reason"] and events[0]["unblock_command"]
    assert events[1]["pr_url"] == result.pr_url and events[1]["trace_id"] == blocked.trace_id
    assert blocked.trace_id in str(local_prs(example_remote)[-1])

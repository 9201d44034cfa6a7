"""The write_back activity: report a ticket's outcome to the source it came from.

DONE, BLOCKED, FAILED and CANCELLED tickets whose `source` is set get their file moved, their bead
closed or annotated, or their issue commented and relabelled (clients/sources). Every source makes this
idempotent, because Temporal retries it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.redact import redact
from activities.settings import Settings
from clients.sources import SourceError, source_for_ticket
from clients.sources.base import follow_ups_for
from workflows.contracts import TicketState, WriteBackRequest, WriteBackResult


class WriteBackActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="write_back")
    async def write_back(self, req: WriteBackRequest) -> WriteBackResult:
        if not req.ticket.source:
            return WriteBackResult(changed=False, action="the ticket has no source")
        secrets = self.settings.secret_values()
        try:
            source = source_for_ticket(req.ticket.source, self.settings)
            reason = redact(req.reason, secrets)[:500]
            result = await source.write_back(req.ticket, req.state, req.pr_url, reason)
            if req.state is TicketState.DONE and self.settings.follow_up_tickets:
                for follow_up in follow_ups_for(req.ticket, req.findings, req.pr_url):
                    activity.heartbeat(follow_up.ticket_id)
                    created = await source.add_follow_up(req.ticket, follow_up)
                    result.follow_ups += [created] if created else []
            return result
        except SourceError as exc:
            message = redact(str(exc), secrets)
            if not exc.retryable:
                raise ApplicationError(message, type="InvalidTicket", non_retryable=True) from None
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
            raise ApplicationError(
                message,
                type="SourceUnavailable",
                next_retry_delay=delay,
                category=ApplicationErrorCategory.BENIGN if delay else ApplicationErrorCategory.UNSPECIFIED,
            ) from None

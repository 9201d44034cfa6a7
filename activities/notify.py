"""notify: tell people a ticket is BLOCKED, DONE or FAILED (JSON webhook, Slack-compatible webhook, ntfy).

The targets and their URLs (secrets: Slack and ntfy URLs carry the token) come from the worker's
settings, never from the request. A failed delivery raises, so Temporal retries it (policy.NOTIFY); the
workflow starts this activity without waiting for it, so a dead receiver never holds up a ticket.
Every delivery carries an idempotency key that is the same on each retry, for receivers that dedupe.
"""

from __future__ import annotations

from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.pr_body import workflow_url
from activities.redact import redact
from activities.settings import NotifyTarget, Settings
from workflows.contracts import NotifyRequest, TicketState

TIMEOUT_SECONDS = 10.0
_NTFY_PRIORITY = {TicketState.BLOCKED: "high", TicketState.FAILED: "high", TicketState.DONE: "default"}
_NTFY_TAGS = {
    TicketState.BLOCKED: "raised_hand",
    TicketState.FAILED: "x",
    TicketState.DONE: "white_check_mark",
}


def headline(req: NotifyRequest) -> str:
    what = {
        TicketState.BLOCKED: f"is BLOCKED: {req.reason}",
        TicketState.DONE: f"is DONE: {req.pr_url or 'PR opened'}",
        TicketState.FAILED: f"FAILED: {req.reason}",
    }.get(req.state, f"is {req.state.value}")
    return f"Ticket {req.ticket_id} ({req.title}) {what}"


def webhook_payload(req: NotifyRequest, link: str, key: str) -> dict[str, Any]:
    return {
        "event": f"ticket.{req.state.value.lower()}",
        "idempotency_key": key,
        **req.model_dump(mode="json"),
        "workflow_url": link,
        "text": headline(req),
    }


def slack_payload(req: NotifyRequest, link: str) -> dict[str, Any]:
    lines = [f"*{headline(req)}*"]
    if req.state is TicketState.BLOCKED and req.unblock_command:
        lines.append(f"To unblock: `{req.unblock_command}`")
    if req.state is TicketState.FAILED:
        lines.append(f"To retry: `ticketflow retry {req.ticket_id}`")
    if link:
        lines.append(f"<{link}|Open in the Temporal Web UI>")
    return {"text": "\n".join(lines)}


def ntfy_request(req: NotifyRequest, link: str, key: str) -> tuple[bytes, dict[str, str]]:
    body = headline(req)
    if req.state is TicketState.BLOCKED and req.unblock_command:
        body += f"\nTo unblock: {req.unblock_command}"
    headers = {
        "Title": f"ticketflow: {req.ticket_id} {req.state.value}",
        "Priority": _NTFY_PRIORITY.get(req.state, "default"),
        "Tags": _NTFY_TAGS.get(req.state, "ticket"),
        "X-Idempotency-Key": key,
    }
    if link:
        headers["Click"] = link
    # HTTP headers must be latin-1; ntfy reads UTF-8 bodies, so only the title is squeezed.
    headers["Title"] = headers["Title"].encode("latin-1", "replace").decode("latin-1")
    return body.encode(), headers


def masked(req: NotifyRequest, secrets: list[str]) -> NotifyRequest:
    """The request with its free text redacted: a reason quotes agents and checks, a title is anyone's."""
    return req.model_copy(
        update={
            "title": redact(req.title, secrets),
            "reason": redact(req.reason, secrets),
            "unblock_command": redact(req.unblock_command, secrets) if req.unblock_command else None,
        }
    )


class NotifyActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> int:
        """Deliver to every target that wants this event; returns how many were told."""
        targets = [t for t in self.settings.notify if req.state.value in t.events]
        if not targets:
            return 0
        info = activity.info()
        key = f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"
        req = masked(req, [*self.settings.secret_values(), *(t.url.get_secret_value() for t in targets)])
        link = workflow_url(self.settings.ui_url, self.settings.namespace, req.workflow_id)
        failures: list[str] = []
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
            for number, target in enumerate(targets, 1):
                try:
                    await self._send(http, target, req, link if req.workflow_id else "", key)
                except httpx.HTTPError as exc:
                    secret = [target.url.get_secret_value()]
                    failures.append(f"{target.kind} target #{number}: {redact(str(exc), secret)}")
        if failures:
            activity.logger.warning("notification failed: %s", "; ".join(failures))
            raise ApplicationError("could not notify " + "; ".join(failures), type="NotifyFailed")
        return len(targets)

    async def _send(
        self, http: httpx.AsyncClient, target: NotifyTarget, req: NotifyRequest, link: str, key: str
    ) -> None:
        url = target.url.get_secret_value()
        if target.kind == "webhook":
            response = await http.post(
                url, json=webhook_payload(req, link, key), headers={"Idempotency-Key": key}
            )
        elif target.kind == "slack":
            response = await http.post(url, json=slack_payload(req, link))
        else:
            body, headers = ntfy_request(req, link, key)
            response = await http.post(url, content=body, headers=headers)
        response.raise_for_status()

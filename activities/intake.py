"""The poll_sources activity behind the intake Schedule: run intake once for every configured source."""

from __future__ import annotations

from temporalio import activity

from activities.redact import redact
from activities.settings import Settings
from clients.intake import run_intake
from clients.sources import SourceError, open_source
from workflows.contracts import IntakePollRequest, IntakePollResult


class IntakeActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="poll_sources")
    async def poll_sources(self, request: IntakePollRequest) -> IntakePollResult:
        result = IntakePollResult()
        secrets = self.settings.secret_values()
        for text in request.sources or self.settings.sources:
            activity.heartbeat(text)
            try:
                report = await run_intake(activity.client(), self.settings, open_source(text, self.settings))
            except SourceError as exc:
                # One unreadable source must not stop the others; the error is in the result.
                result.errors.append(redact(f"{text}: {exc}", secrets))
                continue
            result.started += report.started
            result.rejected += report.rejected
            result.errors += [redact(e, secrets) for e in report.errors]
        if result.errors:
            activity.logger.warning("intake poll: %s", "; ".join(result.errors))
        return result

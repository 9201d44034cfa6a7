"""CLI commands of intake and recovery: `ticketflow intake`, `retry-failed` and `webhook`.

clients/cli.py registers them by name ("clients.intake_commands:cmd_intake") and imports this module
only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from activities.settings import Settings
from clients import intake, tickets
from clients.connect import connect
from clients.sources import SourceError, open_source


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


async def cmd_intake(args: argparse.Namespace, settings: Settings) -> int:
    texts = args.sources or settings.sources
    try:
        if not texts:
            raise SourceError(
                "name a SOURCE (a Backlog.md folder, a beads repo, github:OWNER/REPO) or configure `sources`"
            )
        sources = [open_source(text, settings) for text in texts]
        client = await connect(settings)
        if args.schedule:
            outcome = await intake.ensure_schedule(client, settings, args.sources or None)
            every = settings.intake_interval_minutes
            print(f"intake schedule {outcome}: polls {len(texts)} source(s) every {every:g} min")
            return 0
        reports = [await intake.run_intake(client, settings, s, dry_run=args.dry_run) for s in sources]
    except SourceError as exc:
        raise tickets.TicketOperationError(str(exc)) from exc
    if args.json:
        _print_json([asdict(r) for r in reports])
    else:
        _print_reports(reports, "would start" if args.dry_run else "started")
    return 1 if any(r.errors or r.rejected for r in reports) else 0


def _print_reports(reports: list[intake.IntakeReport], verb: str) -> None:
    for r in reports:
        print(
            f"{r.source}: {verb} {len(r.started)}, already known {len(r.existing)}, refused {len(r.rejected)}"
        )
        for ticket_id in r.started:
            print(f"  {verb} {ticket_id}")
        for line in r.rejected:
            print(f"  refused {line}")
        for line in r.errors:
            print(f"  error: {line}", file=sys.stderr)


async def cmd_retry_failed(args: argparse.Namespace, settings: Settings) -> int:
    found = await intake.retry_failed(
        await connect(settings),
        settings,
        dry_run=args.dry_run,
        max_age_days=args.max_age_days,
        ticket_id=args.id,
    )
    if args.json:
        _print_json([asdict(f) for f in found])
        return 0
    if not found:
        print("no FAILED tickets in that window")
    for f in found:
        action = f.retried or ("would retry" if f.kind == intake.TRANSIENT else f"left alone ({f.kind})")
        print(f"{f.ticket_id:<24} {f.kind:<10} {action}\n    {f.reason[:200]}")
    return 0


async def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from clients.webhook import serve_webhook
    from workers.logging_setup import setup_logging

    # JSON lines (text at a terminal), with every configured secret masked, like the worker's.
    setup_logging(settings.log_format, settings.log_level, secrets=settings.secret_values())
    try:
        await serve_webhook(settings, args.host, args.port)
    except SourceError as exc:
        raise tickets.TicketOperationError(str(exc)) from exc
    return 0

"""The `ticketflow` command line."""

# Imports are lazy: this module loads only the standard library, so `--help`, `--version`, argument
# errors and `completion` start at once. Each command imports what it needs (the Temporal client, the
# activities, pydantic models) when it runs; tests/clients/test_cli_process.py keeps it that way.

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients.connect import connect

if TYPE_CHECKING:
    from activities.settings import Settings
    from workflows.contracts import Ticket, TicketStatus

# Exit status after stdout was closed early (`ticketflow list | head -1`): 128 + SIGPIPE, as shells and git.
BROKEN_PIPE = 141


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: one `error:` line, exit status 1, no traceback."""
    from pydantic import ValidationError

    from clients import devserver, stats, tickets
    from clients.connect import TemporalUnavailable
    from clients.ticket_files import TicketError

    return (
        TicketError,
        tickets.TicketOperationError,
        TemporalUnavailable,
        devserver.DevServerError,
        ValidationError,
        stats.StatsError,
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# ------------------------------------------------------------------------------------ commands


def _dev_info(settings: Settings, state: str, pid: int | None = None) -> dict[str, Any]:
    return {
        "state": state,
        "address": settings.temporal_address,
        "web_ui": settings.ui_url,
        "database": str(settings.state_dir / "temporal.db"),
        "pid": pid,
    }


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from clients import devserver

    if devserver.port_open(settings.temporal_address):
        ours = devserver.running_pid(settings, "dev-server")
        if ours is None and not args.use_existing:
            raise devserver.DevServerError(
                f"{settings.temporal_address} is already taken by a server `ticketflow dev` did not start; "
                "stop it, choose another temporal_address, or use it with `ticketflow dev --use-existing`"
            )
        if args.json:
            _print_json(_dev_info(settings, "already running" if ours else "using existing", ours))
        elif ours:
            print(f"the dev server is already running on {settings.temporal_address} (pid {ours})")
        else:
            print(f"using the server already on {settings.temporal_address} (not started by ticketflow)")
        return 0
    if not args.headless and devserver.port_open(f"127.0.0.1:{settings.ui_port}"):
        raise devserver.DevServerError(
            f"the Web UI port {settings.ui_port} is taken; set ui_port (TICKETFLOW_UI_PORT) or use --headless"
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    command = devserver.dev_server_command(settings, headless=args.headless)
    if args.detach:
        pid = devserver.start_background(settings, "dev-server", command)
        await devserver.wait_for_port(settings.temporal_address)
        if args.json:
            _print_json(_dev_info(settings, "started", pid))
            return 0
        print(f"Temporal dev server on {settings.temporal_address}, Web UI {settings.ui_url}")
        print(f"(state: {settings.state_dir / 'temporal.db'}; stop with `ticketflow stop`)")
        return 0
    print(f"Temporal dev server on {settings.temporal_address}, Web UI {settings.ui_url} (Ctrl-C stops it)")
    proc = await asyncio.create_subprocess_exec(*command)
    return await proc.wait()


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from clients import devserver

    if args.detach:
        pid = devserver.start_background(settings, "worker", devserver.worker_command())
        log = settings.state_dir / "worker.log"
        if args.json:
            _print_json({"state": "started", "pid": pid, "log": str(log), "task_queue": settings.task_queue})
            return 0
        print(f"worker started in the background (pid {pid}, log {log})")
        return 0
    from workers.logging_setup import setup_logging
    from workers.main import install_signal_handlers, run_workers
    from workers.metrics import metrics_runtime
    from workers.tracing import setup_tracing, shutdown_tracing

    setup_logging(settings.log_format, settings.log_level, secrets=settings.secret_values())
    setup_tracing("ticketflow-worker", settings.otlp_endpoint)
    runtime = metrics_runtime(settings.metrics_address)
    client = await connect(settings, runtime=runtime)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await run_workers(client, settings, stop)
    finally:
        shutdown_tracing()
    return 0


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    from clients import devserver

    stopped = {name: devserver.stop_background(settings, name) for name in devserver.BACKGROUND}
    if args.json:
        _print_json({name: "stopped" if done else "not running" for name, done in stopped.items()})
        return 0
    for name, done in stopped.items():
        print(f"{name}: {'stopped' if done else 'not running'}")
    return 0


def _tickets_from_args(args: argparse.Namespace) -> list[Ticket]:
    from pydantic import ValidationError

    from clients.ticket_files import TicketError, explain, load_ticket_file
    from workflows.contracts import Ticket, slugify

    if args.files:
        return [load_ticket_file(Path(f), {"repo": args.repo} if args.repo else None) for f in args.files]
    missing = [name for name in ("title", "body", "repo") if not getattr(args, name)]
    if missing:
        raise TicketError(
            f"give a ticket FILE, or all of --title, --body and --repo (missing: {', '.join(missing)})"
        )
    fields = {
        "title": args.title,
        "body": args.body,
        "repo": args.repo,
        "id": args.id or slugify(args.title, 60),
    }
    try:
        return [Ticket.model_validate(fields)]
    except ValidationError as exc:
        raise TicketError(f"--title/--body/--repo: {explain(exc)}") from exc


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets
    from clients.intake import find_cycles
    from clients.ticket_files import TicketError

    # Every ticket is checked (repository, dependency cycles) before anything starts or connects.
    batch = [await tickets.validate_repo(ticket, settings) for ticket in _tickets_from_args(args)]
    cycles = find_cycles({t.id: list(t.depends_on) for t in batch})
    if cycles:
        raise TicketError("dependency cycle: " + "; ".join(" -> ".join(cycle) for cycle in cycles))
    client = await connect(settings)
    results = [await tickets.submit(client, settings, ticket, check_repo=False) for ticket in batch]
    if args.json:
        _print_json([asdict(r) for r in results])
        return 0
    for result in results:
        if result.started:
            print(f"submitted {result.ticket_id} (workflow {result.workflow_id})")
            ticket = next(t for t in batch if t.id == result.ticket_id)
            print(f"  {tickets.test_command_note(ticket, settings)}")
        else:
            print(
                f"{result.ticket_id} was already submitted: workflow {result.workflow_id} is "
                f"{result.existing_state} ({result.existing_status}); not starting it again"
            )
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets

    client = await connect(settings)
    found = await tickets.list_tickets(client, args.state)
    if args.json:
        _print_json([asdict(t) for t in found])
        return 0
    if not found:
        print("no tickets")
    for t in found:
        stage = t.stage or "-"
        print(f"{t.ticket_id:<24} {t.state:<18} {stage:<18} p{t.priority or '-'}  {t.title[:60]}")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets
    from workflows.contracts import TicketState

    client = await connect(settings)
    st = await tickets.status(client, args.id)
    if args.json:
        _print_json({**st.model_dump(mode="json"), "next_steps": tickets.next_steps(st)})
        return 0
    print(f"{st.ticket_id}: {st.title}")
    print(f"  state      {st.state.value}" + (f" at {st.stage.value}" if st.stage else ""))
    print(f"  iteration  {st.iteration}/{st.max_iterations}")
    for line in checks_lines(st):
        print(f"  {line}")
    # A reason left from an earlier block means nothing once the ticket moved on (e.g. CANCELLED).
    if st.blocked_reason and st.state in (TicketState.BLOCKED, TicketState.FAILED):
        print(f"  {'blocked' if st.state is TicketState.BLOCKED else 'failed':<10} {st.blocked_reason}")
    if st.waiting_until:
        print(f"  waiting    until {st.waiting_until.isoformat()}")
    if st.branch:
        print(f"  branch     {st.branch}")
    if st.pr_url:
        print(f"  PR         {st.pr_url}")
    if st.models_used:
        print(f"  models     {', '.join(st.models_used)}; tokens {st.tokens.total}")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in st.timings.items())
    if timing:
        print(f"  timings    {timing}")
    for line in st.last_output[-5:]:
        print(f"  | {line}")
    for n, step in enumerate(tickets.next_steps(st)):
        print(f"  {'next' if n == 0 else '':<10} {step}")
    return 0


def checks_lines(st: TicketStatus) -> list[str]:
    """The test command (where it came from, why) and the last test run: outcome, counts, duration,
    first failing test, what to fix."""
    from activities.pr_body import counts_text
    from workflows.contracts import CheckOutcome

    checks = st.last_checks
    command = checks.command if checks else st.test_command
    source = checks.command_source if checks else st.test_command_source
    reason = checks.command_reason if checks else st.test_command_reason
    lines = []
    if command or reason:
        origin = f"{source}: {reason}" if source else reason
        lines.append(f"tests      {command or '(none)'}" + (f"  ({origin})" if origin else ""))
    if checks is None:
        return lines
    counts = counts_text(checks) if checks.verdict is not CheckOutcome.NO_COMMAND else "-"
    exit_code = f", exit {checks.exit_code}" if checks.exit_code is not None else ""
    lines.append(f"checks     {checks.verdict.value}: {counts} in {checks.duration_seconds:.1f}s{exit_code}")
    if checks.reason and not checks.passed:
        lines.append(f"why        {checks.reason}")
    if checks.first_failure:
        lines.append(f"first fail {checks.first_failure}")
    if checks.env_hint and not checks.passed:
        lines.append(f"fix        {checks.env_hint}")
    return lines


async def cmd_unblock(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets

    ack = await tickets.unblock(await connect(settings), args.id, args.guidance)
    _emit(args, {"ticket": args.id, "message": ack.message})
    return 0


async def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets

    ack = await tickets.approve(await connect(settings), args.id, args.note, extra_tokens=args.extra_tokens)
    _emit(args, {"ticket": args.id, "message": ack.message})
    return 0


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets

    message = await tickets.cancel(await connect(settings), args.id, args.reason)
    _emit(args, {"ticket": args.id, "message": message})
    return 0


async def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets

    ack = await tickets.rollback(await connect(settings), args.id)
    _emit(args, {"ticket": args.id, "message": ack.message})
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from clients import tickets

    message = await tickets.retry(await connect(settings), settings, args.id)
    _emit(args, {"ticket": args.id, "message": message})
    return 0


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int | Awaitable[int]:
    """This host's per-attempt log files; for a ticket whose agent ran elsewhere, what its history
    recorded (clients/ticket_logs.py)."""
    folder = settings.logs_dir / args.id
    files = _log_files(folder)
    if not files:
        return _recorded_logs(args, settings)
    if args.json and not args.follow:
        _print_json([{"file": str(p), "log": p.read_text(errors="replace")} for p in files])
        return 0
    for path in files[:-1] if args.follow else files:
        print(f"==> {path.name} <==\n{path.read_text(errors='replace')}")
    if args.follow:
        _follow(folder)
    return 0


async def _recorded_logs(args: argparse.Namespace, settings: Settings) -> int:
    from clients import ticket_logs, tickets
    from clients.connect import TemporalUnavailable

    try:
        client = await connect(settings)
    except TemporalUnavailable as exc:
        folder = settings.logs_dir / args.id
        raise tickets.TicketOperationError(f"no logs for ticket {args.id} under {folder}, and {exc}") from exc
    attempts = await ticket_logs.recorded_attempts(client, args.id)
    if args.json and not args.follow:
        _print_json([asdict(a) for a in attempts])
        return 0
    print(ticket_logs.render_attempts(args.id, attempts, str(settings.logs_dir)), flush=True)
    if args.follow:
        print(f"==> following {args.id}'s live output (Ctrl-C to stop) <==", flush=True)
        status = await ticket_logs.follow(client, args.id, lambda line: print(line, flush=True))
        print(f"==> {args.id} is {status.state.value} <==")
    return 0


def _log_files(folder: Path) -> list[Path]:
    """One file per stage attempt, oldest first (raw agent events in *.events.jsonl are not shown)."""
    return sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []


def _follow(folder: Path) -> None:
    """Print the newest log as it grows; when a newer attempt starts, finish the old file and switch."""
    current: Path | None = None
    handle = None
    while True:
        line = handle.readline() if handle is not None else ""
        if line:
            print(line, end="", flush=True)
            continue
        files = _log_files(folder)
        if files and files[-1] != current:
            if handle is not None:
                print(handle.read(), end="", flush=True)
                handle.close()
            current, handle = files[-1], files[-1].open(errors="replace")
            print(f"==> {current.name} (following; Ctrl-C to stop) <==", flush=True)
            continue
        time.sleep(0.3)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from clients.demo import run_demo

    return await run_demo(settings, timeout=args.timeout, offline=args.offline, as_json=args.json)


def _emit(args: argparse.Namespace, data: dict[str, str]) -> None:
    if args.json:
        _print_json(data)
    else:
        print(data["message"])


# ------------------------------------------------------------------------------------- parsing


Handler = Callable[[argparse.Namespace, "Settings"], Awaitable[int] | int]
# A command's handler: a function of this module, or "module:function" imported when the command runs.
HandlerRef = Handler | str
SHELLS = ("bash", "zsh", "tcsh")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ticketflow")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ticketflow {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: HandlerRef, help_text: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = command("dev", cmd_dev, "start the Temporal dev server (SQLite in the state dir, Web UI)")
    p.add_argument("--detach", action="store_true", help="run in the background")
    p.add_argument("--headless", action="store_true", help="without the Web UI")
    p.add_argument(
        "--use-existing",
        action="store_true",
        help="if a server ticketflow did not start holds the address, use it instead of refusing",
    )
    p = command("worker", cmd_worker, "run a worker (workflows and activities; --json: with --detach)")
    p.add_argument("--detach", action="store_true", help="run in the background")
    command("stop", cmd_stop, "stop the background dev server, worker and demo model server")
    p = command("submit", cmd_submit, "submit ticket files or one ticket from flags")
    p.add_argument("files", nargs="*", help="Markdown ticket files with YAML front matter")
    p.add_argument("--title")
    p.add_argument("--body")
    p.add_argument("--repo", help="repository (also the default for files that name none)")
    p.add_argument("--id", help="ticket id (default: from the title)")
    p = command("list", cmd_list, "list tickets")
    p.add_argument("--state", help="only tickets in this state, e.g. BLOCKED")
    for name, handler, text in (
        ("status", cmd_status, "show a ticket's status"),
        ("retry", cmd_retry, "retry a BLOCKED ticket's stage, or restart a FAILED ticket where it failed"),
        ("rollback", cmd_rollback, "reset a BLOCKED ticket's worktree to its last good checkpoint"),
    ):
        command(name, handler, text).add_argument("id")
    p = command("approve", cmd_approve, "approve a ticket waiting for approval")
    p.add_argument("id")
    p.add_argument("--note", default="")
    p.add_argument("--extra-tokens", type=int, help="extend a ticket paused at its token budget by this much")
    p = command("unblock", cmd_unblock, "answer a BLOCKED ticket with guidance for the agent")
    p.add_argument("id")
    p.add_argument("--guidance", required=True)
    p = command("cancel", cmd_cancel, "cancel a ticket")
    p.add_argument("id")
    p.add_argument("--reason", default="cancelled by operator")
    p = command("logs", cmd_logs, "print a ticket's agent logs")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="follow the newest log")
    p = command("demo", cmd_demo, "run the example backlog end to end on a local dev server")
    p.add_argument(
        "--timeout", type=float, help="seconds to wait (default: 300 on the fake model, 3600 on Ollama)"
    )
    p.add_argument("--offline", action="store_true", help="run on the built-in fake Ollama even if one runs")

    p = command("intake", "clients.intake_commands:cmd_intake", "start the new tickets of ticket sources")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="default: the configured sources")
    p.add_argument("--dry-run", action="store_true", help="list what would start")
    p.add_argument("--schedule", action="store_true", help="create/update the Schedule that polls them")
    p = command(
        "retry-failed",
        "clients.intake_commands:cmd_retry_failed",
        "re-run FAILED tickets whose failure was transient",
    )
    p.add_argument("--dry-run", action="store_true", help="list failed tickets and what would happen")
    p.add_argument("--max-age-days", type=float, default=7.0, help="only tickets failed this recently")
    p.add_argument("--id", help="only this ticket")
    p = command(
        "webhook",
        "clients.intake_commands:cmd_webhook",
        "receive GitHub, GitLab and Gitea issue events and start tickets",
        json_flag=False,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)

    p = command(
        "watch",
        "clients.watch:cmd_watch",
        "a live table of tickets: state, stage, model, iteration, elapsed",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="only these tickets")
    p.add_argument("--state", help="only tickets in this state, e.g. BLOCKED")
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p = command(
        "stats", "clients.watch:cmd_stats", "success rate, durations, tokens and cost, failure reasons"
    )
    p.add_argument("--window", default="7d", help="how far back: 30m, 12h, 7d, 2w (default 7d)")

    p = command(
        "worktrees",
        "clients.worktrees:cmd_worktrees",
        "this host's ticket worktrees and idle pool; --prune leftovers",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="release the worktrees of DONE and CANCELLED tickets; trim the pool",
    )
    p.add_argument(
        "--unknown",
        action="store_true",
        help="also release worktrees whose ticket Temporal does not know (check the server first!)",
    )
    p.add_argument(
        "--failed-older-than",
        type=float,
        metavar="DAYS",
        help="also release FAILED tickets' worktrees, if they failed at least DAYS days ago",
    )

    config = sub.add_parser("config", help="check the configuration", description="check the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    p = config_sub.add_parser(
        "check",
        help="validate configuration and environment; print what the worker will use",
        description="validate configuration and environment (git, sandbox, agent CLIs, Temporal, model "
        "servers); print what the worker will use",
    )
    p.set_defaults(handler="clients.config_check:cmd_config_check")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command(
        "completion",
        cmd_completion,
        "print a shell completion script: ticketflow completion bash > /etc/bash_completion.d/ticketflow",
        json_flag=False,
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(needs_settings=False)
    return parser


def cmd_completion(args: argparse.Namespace, settings: Settings | None) -> int:
    """A static completion script generated from this parser (shtab): subcommands and their options."""
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0


def resolve(handler: HandlerRef) -> Handler:
    if callable(handler):
        return handler
    module, _, name = handler.partition(":")
    found: Handler = getattr(importlib.import_module(module), name)
    return found


class ConfigError(Exception):
    pass


def load_settings() -> Settings:
    import tomllib

    from pydantic import ValidationError

    from activities.settings import ConfigFileMissing, Settings, config_file

    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {config_problems(exc)}") from exc
    except ConfigFileMissing as exc:
        raise ConfigError(str(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration: {config_file()}: {exc}") from exc


def config_problems(exc: Any) -> str:
    """A Settings ValidationError as one line: an unknown key is named with the closest valid one."""
    from activities.settings import closest_key

    parts = []
    for item in exc.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(part) for part in loc)
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            close = closest_key(loc)
            hint = f"; did you mean {'.'.join(str(p) for p in (*loc[:-1], close))}?" if close else ""
            parts.append(f"{where}: unknown setting{hint}")
        else:
            parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    traced = False
    try:
        if not getattr(args, "needs_settings", True):
            return int(resolve(args.handler)(args, None))  # type: ignore[arg-type]
        settings = load_settings()
        from workers.tracing import setup_tracing

        setup_tracing("ticketflow-cli", settings.otlp_endpoint)
        traced = True
        outcome = resolve(args.handler)(args, settings)
        if asyncio.iscoroutine(outcome):
            outcome = asyncio.run(outcome)
        sys.stdout.flush()  # a closed pipe shows here, inside the handling below
        return int(outcome)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from pydantic import ValidationError

        from clients.ticket_files import explain

        if isinstance(exc, ValidationError):
            print(f"error: {explain(exc)}", file=sys.stderr)
            return 1
        if isinstance(exc, user_errors()):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        if traced:
            from workers.tracing import shutdown_tracing

            shutdown_tracing()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())


def entry() -> None:
    """Console-script entry: skip interpreter finalization, which can abort while the Temporal
    runtime's native threads wind down (seen as an intermittent exit -6 after a finished command)."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = BROKEN_PIPE
    sys.stderr.flush()
    os._exit(code)

"""Running agents and test commands inside a bubblewrap sandbox, with rlimits.

Inside: the whole system read-only; writable only the worktree (and its git metadata), the agent's own
run directory and HOME; a private /tmp and /proc; the user's home, ticketflow's state directory (other
tickets, mirrors, logs) and the config file hidden; no network unless allowed. The process dies with the
worker (--die-with-parent), so a killed worker never leaves an agent editing behind its back.

Without bwrap, mode `auto` warns loudly once and runs directly; mode `required` refuses with a
non-retryable error. rlimits (CPU seconds, address space, file size) apply either way, through prlimit.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.settings import SandboxMode, Settings

log = logging.getLogger("ticketflow.sandbox")
MB = 1024 * 1024
# Hidden even though the rest of the system is readable: sockets that would hand out control of the host.
HOST_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock", "/run/user")


@dataclass(frozen=True)
class SandboxPlan:
    mode: SandboxMode
    writable: tuple[Path, ...]
    network: bool
    hidden: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    cpu_seconds: int = 0
    memory_mb: int = 0
    file_size_mb: int = 0
    hidden_files: tuple[Path, ...] = field(default=())


@functools.cache
def bwrap_problem() -> str | None:
    """None when bubblewrap can build a sandbox here; otherwise why not (checked once per process)."""
    binary = shutil.which("bwrap")
    if binary is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid"]
    try:
        done = subprocess.run([*probe, "--", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if done.returncode != 0:
        return f"bwrap cannot create namespaces here: {done.stderr.strip()[:200]}"
    return None


@functools.cache
def _warn_unsandboxed(problem: str) -> None:
    log.warning(
        "!!! SANDBOX OFF: %s. Agents and tests run WITHOUT isolation and can read your home directory. "
        'Install bubblewrap, or set sandbox = "off" to silence this warning, or "required" to refuse. !!!',
        problem,
    )


def wrap(argv: Sequence[str], plan: SandboxPlan) -> list[str]:
    """argv as it should be spawned: inside bwrap when possible, always under rlimits."""
    limited = [*_rlimit_prefix(plan), *argv]
    if plan.mode == "off":
        return [*_die_with_worker_prefix(), *limited]
    problem = bwrap_problem()
    if problem is not None:
        if plan.mode == "required":
            raise ApplicationError(
                f"sandbox required but unavailable: {problem}", type="SandboxUnavailable", non_retryable=True
            )
        _warn_unsandboxed(problem)
        return [*_die_with_worker_prefix(), *limited]
    return [*bwrap_args(with_program_files(argv, plan)), "--", *limited]


def with_program_files(argv: Sequence[str], plan: SandboxPlan) -> SandboxPlan:
    """The files the command line names (the agent's program, a script) stay readable even when they
    live under /tmp or a hidden directory, which the sandbox otherwise replaces."""
    named = [Path(arg) for arg in argv if arg.startswith("/") and Path(arg).is_file()]
    if argv and not argv[0].startswith("/") and (found := shutil.which(argv[0])):
        named.append(Path(found))
    # Files under a directory that is already mounted need (and, through symlinks, tolerate) no mount.
    extra = [p for p in named if not any(p.is_relative_to(r) for r in (*plan.readable, *plan.writable))]
    return dataclasses.replace(plan, readable=(*plan.readable, *extra))


def bwrap_args(plan: SandboxPlan) -> list[str]:
    binary = shutil.which("bwrap") or "bwrap"
    args = [binary, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if not plan.network:
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    mounts: list[tuple[Path, list[str]]] = [(Path("/tmp"), ["--tmpfs", "/tmp"])]
    for path in (*plan.hidden, *(Path(s) for s in HOST_SOCKETS)):
        if path.is_dir():
            mounts.append((path, ["--tmpfs", str(path)]))
        elif path.exists():
            mounts.append((path, ["--ro-bind", "/dev/null", str(path)]))
    for path in plan.hidden_files:
        if path.is_file():
            mounts.append((path, ["--ro-bind", "/dev/null", str(path)]))
    # --ro-bind follows a symlinked source, so a program reached through a symlink keeps its name.
    mounts += [(p, ["--ro-bind", str(p), str(p)]) for p in plan.readable if p.exists()]
    mounts += [(p, ["--bind", str(p), str(p)]) for p in plan.writable if p.exists()]
    # Parents before children, so a bind inside a hidden directory lands on top of its tmpfs.
    for _, mount in sorted(mounts, key=lambda item: len(item[0].parts)):
        args += mount
    return args


def _rlimit_prefix(plan: SandboxPlan) -> list[str]:
    prlimit = shutil.which("prlimit")
    limits = [
        f"--{flag}={value}"
        for flag, value in (
            ("cpu", plan.cpu_seconds),
            ("as", plan.memory_mb * MB),
            ("fsize", plan.file_size_mb * MB),
        )
        if value > 0
    ]
    if prlimit is None or not limits:
        return []
    return [prlimit, *limits, "--"]


def _die_with_worker_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def git_dirs(worktree: Path) -> tuple[list[Path], list[Path]]:
    """(writable, readable) git metadata of a linked worktree: its own gitdir, and the shared objects."""
    marker = worktree / ".git"
    if not marker.is_file():
        return [], []
    text = marker.read_text().strip()
    if not text.startswith("gitdir:"):
        return [], []
    own = (worktree / text.removeprefix("gitdir:").strip()).resolve()
    common_file = own / "commondir"
    common = (own / common_file.read_text().strip()).resolve() if common_file.is_file() else own.parent.parent
    return [own], [common]


def hidden_paths(settings: Settings) -> list[Path]:
    home = Path.home()
    return [p for p in {home, Path("/home"), Path("/root"), settings.state_dir.resolve()} if p != Path("/")]


def interpreter_paths() -> list[Path]:
    """The worker's Python (venv and base install) stays usable even when it lives under a hidden home."""
    prefixes = {Path(p) for p in (sys.prefix, sys.base_prefix)}
    # Both spellings: the interpreter is started by its unresolved path (a symlinked venv, say).
    return sorted(prefixes | {p.resolve() for p in prefixes})


def agent_plan(
    settings: Settings,
    mode: SandboxMode,
    network: bool,
    worktree: Path,
    writable: Sequence[Path],
    limits: tuple[int, int, int],
    expose: Sequence[str] = (),
) -> SandboxPlan:
    own_git, shared_git = git_dirs(worktree)
    config_file = os.environ.get("TICKETFLOW_CONFIG")
    return SandboxPlan(
        mode=mode,
        writable=(worktree.resolve(), *own_git, *(p.resolve() for p in writable)),
        network=network,
        hidden=tuple(hidden_paths(settings)),
        readable=(*shared_git, *interpreter_paths(), *(Path(p) for p in expose)),
        cpu_seconds=limits[0],
        memory_mb=limits[1],
        file_size_mb=limits[2],
        hidden_files=(Path("ticketflow.toml").resolve(), *([Path(config_file)] if config_file else [])),
    )


def checks_plan(settings: Settings, worktree: Path) -> SandboxPlan:
    return agent_plan(settings, settings.checks_sandbox, settings.checks_network, worktree, [], (0, 0, 0))

"""Running agents and test commands inside a bubblewrap sandbox, with resource limits.

Inside: the whole system read-only; writable only the worktree's files and the agent's own run directory
(its HOME); the worktree's git metadata read-only (ticketflow commits on the host); a private, size-capped
/tmp; a private /proc (its own pid namespace: no worker or other ticket is visible); no capabilities; the
user's home, /home, /root, /run (host sockets), ticketflow's state directory (other tickets, mirrors,
logs), the config file and the host's password and SSH host key files hidden. The process dies with the
worker (--die-with-parent), so a killed worker never leaves an agent editing behind its back.

Network: `network = false` gets an empty namespace of its own (loopback only). `network = true` gets a
namespace of its own behind pasta (see jail.py): the internet is reachable, the host's loopback and the
host's other addresses are not, except the `loopback_ports` the agent is allowed (its model API, say).

Limits: the launcher (jail.py) puts the sandbox in a cgroup with pids.max (`max_processes`) and a memory
limit (`memory_mb`) for all its processes together; prlimit sets RLIMIT_CPU and RLIMIT_FSIZE per process.
Without a usable cgroup, RLIMIT_NPROC (ignored for root) and RLIMIT_DATA stand in.

Mode `auto` uses every protection this host supports and, for each one it cannot, logs a loud warning
and counts `ticketflow_sandbox_degraded{reason}`; mode `required` refuses with the non-retryable
`SandboxUnavailable` error instead; mode `off` runs directly (rlimits only).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from temporalio.exceptions import ApplicationError

from activities.agents import jail
from activities.settings import AgentConfig, SandboxMode, Settings
from workers.metrics import record_sandbox_degraded

log = logging.getLogger("ticketflow.sandbox")
MB = 1024 * 1024
JAIL = Path(jail.__file__).resolve()
# Size of the tmpfs that hides a directory: room for the mount points of binds inside it, little else.
HIDDEN_TMPFS_MB = 16
# Host sockets live under /run (docker, systemd, dbus, databases): hidden, resolv.conf's target excepted.
RUN_DIRS = (Path("/run"), Path("/var/run"))
# uid 0 in the sandbox has no capabilities, but still owns root's files: hide the secret ones.
SYSTEM_SECRETS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh/ssh_host_*_key",
)
METADATA_NETWORK = "169.254.0.0/16"
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")
Degradation = Literal["bwrap", "network", "cgroup", "tmp_size"]


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
    # Host loopback ports reachable from inside (network = true only); everything else on the host is not.
    loopback_ports: tuple[int, ...] = ()
    max_processes: int = 0
    tmp_size_mb: int = 0
    # Outside destinations no sandbox may reach (network = true, root): see denied_networks.
    deny_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Containment:
    """What this host can enforce for a plan."""

    network: Literal["none", "netns", "pasta"]  # none: --unshare-net (own loopback only)
    cgroup_pids: bool  # pids.max set by the launcher
    cgroup_memory: bool  # memory limit set by the launcher (else RLIMIT_DATA)
    nproc_rlimit: bool
    tmp_size: bool


# ------------------------------------------------------------------------------------- probes


@functools.cache
def bwrap_problem() -> str | None:
    """None when bubblewrap can build a sandbox here; otherwise why not (checked once per process)."""
    binary = shutil.which("bwrap")
    if binary is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid"]
    return _probe([*probe, "--cap-drop", "ALL", "--", "true"], "bwrap cannot create namespaces here")


@functools.cache
def tmp_size_problem() -> str | None:
    binary = shutil.which("bwrap") or "bwrap"
    probe = [binary, "--ro-bind", "/", "/", "--size", str(MB), "--tmpfs", "/tmp", "--", "true"]
    return _probe(probe, "this bwrap cannot cap a tmpfs (--size needs bubblewrap 0.5 or later)")


@functools.cache
def network_problem() -> str | None:
    """None when agents can get their own network namespace behind pasta; otherwise why not."""
    if shutil.which("pasta") is None:
        return "pasta is not installed (Debian/Ubuntu: apt-get install passt)"
    if os.geteuid() == 0:
        if shutil.which("ip") is None or shutil.which("nsenter") is None:
            return "`ip` (iproute2) and `nsenter` (util-linux) are needed for the network namespace"
        return jail.probe_netns()
    pasta = shutil.which("pasta") or "pasta"
    return _probe([pasta, *jail.pasta_options([]), "--", "true"], "pasta cannot create a namespace here")


@functools.cache
def cgroup_problem(memory: bool) -> str | None:
    """None when the launcher can create a cgroup with pids.max (and a memory limit) here."""
    return jail.probe_cgroup(pids=True, memory=memory)


def _probe(argv: list[str], failure: str) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{failure}: {exc}"
    if done.returncode != 0:
        return f"{failure}: {(done.stderr or done.stdout).strip()[:200]}"
    return None


def clear_probes() -> None:
    """Forget what the probes found (tests change PATH; an operator may install a package)."""
    for probe in (bwrap_problem, tmp_size_problem, network_problem, cgroup_problem):
        probe.cache_clear()
    _warn.cache_clear()


# ---------------------------------------------------------------------------------- degrading

_WARNINGS: dict[Degradation, str] = {
    "bwrap": "SANDBOX OFF: {problem}. Agents and tests run WITHOUT isolation and can read your home "
    "directory, the worker's processes and the host's loopback services",
    "network": "SANDBOX NETWORK OFF: {problem}. Agents with network = true run with NO network at all "
    "(never on the host's loopback); install passt (pasta) and iproute2 and run the worker as root",
    "cgroup": "SANDBOX PROCESS LIMIT OFF: {problem}. max_processes is not enforced (root ignores "
    "RLIMIT_NPROC) and memory_mb is a per-process RLIMIT_DATA; give the worker a writable cgroup",
    "tmp_size": "SANDBOX /tmp UNCAPPED: {problem}. An agent can fill the worker's memory through /tmp",
}


@functools.cache
def _warn(reason: Degradation, problem: str) -> None:
    log.warning(
        '!!! %s. Set sandbox = "required" to refuse instead, or "off" for that agent. !!!',
        _WARNINGS[reason].format(problem=problem),
    )


def _degrade(plan: SandboxPlan, reason: Degradation, problem: str) -> None:
    """`required` refuses; `auto` warns (once per process and problem) and counts every occurrence."""
    if plan.mode == "required":
        raise ApplicationError(
            f"sandbox required but unavailable: {problem}", type="SandboxUnavailable", non_retryable=True
        )
    _warn(reason, problem)
    record_sandbox_degraded(reason)


def containment(plan: SandboxPlan) -> Containment:
    """What this host enforces for the plan; each protection it cannot give goes through _degrade."""
    network: Literal["none", "netns", "pasta"] = "none"
    if plan.network:
        problem = network_problem()
        if problem is None:
            network = "netns" if os.geteuid() == 0 else "pasta"
        else:
            _degrade(plan, "network", problem)
    pids = memory = nproc = False
    if plan.max_processes > 0 or plan.memory_mb > 0:
        problem = cgroup_problem(plan.memory_mb > 0)
        if problem is None:
            pids, memory = plan.max_processes > 0, plan.memory_mb > 0
        elif plan.memory_mb > 0 and plan.max_processes > 0 and cgroup_problem(False) is None:
            pids = True  # no memory controller here: memory_mb falls back to RLIMIT_DATA
        nproc = not pids and plan.max_processes > 0 and os.geteuid() != 0
        if plan.max_processes > 0 and not pids and not nproc:
            _degrade(plan, "cgroup", problem or "no pids cgroup")
    tmp_problem = tmp_size_problem() if plan.tmp_size_mb > 0 else None
    if tmp_problem is not None:
        _degrade(plan, "tmp_size", tmp_problem)
    return Containment(
        network=network,
        cgroup_pids=pids,
        cgroup_memory=memory,
        nproc_rlimit=nproc,
        tmp_size=plan.tmp_size_mb > 0 and tmp_problem is None,
    )


# --------------------------------------------------------------------------------------- argv


def wrap(argv: Sequence[str], plan: SandboxPlan) -> list[str]:
    """argv as it should be spawned: inside bwrap (and the launcher) when possible, always under limits."""
    if plan.mode == "off":
        return [*_die_with_worker_prefix(), *_rlimit_prefix(plan, data=True, nproc=False), *argv]
    problem = bwrap_problem()
    if problem is not None:
        _degrade(plan, "bwrap", problem)
        return [*_die_with_worker_prefix(), *_rlimit_prefix(plan, data=True, nproc=False), *argv]
    held = containment(plan)
    inner = [*_rlimit_prefix(plan, data=not held.cgroup_memory, nproc=held.nproc_rlimit), *argv]
    box = bwrap_args(with_program_files(argv, plan), held)
    return [*launcher_prefix(plan, held), *box, "--", *inner]


def launcher_prefix(plan: SandboxPlan, held: Containment) -> list[str]:
    """`python -I -S jail.py <options> --` when there is a namespace or cgroup to set up; else nothing.
    By file path and isolated (-I): no module in the worktree or variable in the environment can stand in
    for it, although it runs outside the sandbox."""
    options: list[str] = []
    ports = ",".join(str(p) for p in plan.loopback_ports) or "none"
    if held.network == "netns":
        options += ["--netns", ports]
        if plan.deny_networks:
            options += ["--deny", ",".join(plan.deny_networks)]
    elif held.network == "pasta":
        options += ["--pasta", ports]
    if held.cgroup_pids:
        options += ["--pids", str(plan.max_processes)]
    if held.cgroup_memory:
        options += ["--memory-mb", str(plan.memory_mb)]
    if not options:
        return []
    return [sys.executable, "-I", "-S", str(JAIL), "--parent", str(os.getpid()), *options, "--"]


def with_program_files(argv: Sequence[str], plan: SandboxPlan) -> SandboxPlan:
    """The files the command line names (the agent's program, a script) stay readable even when they
    live under /tmp or a hidden directory, which the sandbox otherwise replaces."""
    named = [Path(arg) for arg in argv if arg.startswith("/") and Path(arg).is_file()]
    if argv and not argv[0].startswith("/") and (found := shutil.which(argv[0])):
        named.append(Path(found))
    hidden = (*plan.hidden, Path("/tmp"), *RUN_DIRS)
    mounted = (*plan.readable, *plan.writable)
    extra: list[Path] = []
    # Only what the sandbox would hide needs a bind: a file the read-only root shows already must not get
    # one (bwrap cannot create a bind target on the read-only root, e.g. over a symlink). A symlink
    # pointing into a hidden directory gets its target bound, so it resolves inside too.
    for path in named:
        for candidate in dict.fromkeys((path, path.resolve())):
            if (
                any(candidate.is_relative_to(h) for h in hidden)
                and not any(candidate.is_relative_to(m) for m in mounted)
                and candidate not in extra
            ):
                extra.append(candidate)
    return dataclasses.replace(plan, readable=(*plan.readable, *extra))


def bwrap_args(plan: SandboxPlan, held: Containment | None = None) -> list[str]:
    held = held or Containment(
        network="none", cgroup_pids=False, cgroup_memory=False, nproc_rlimit=False, tmp_size=False
    )
    binary = shutil.which("bwrap") or "bwrap"
    args = [binary, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
    if not plan.network or held.network == "none":
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # A fresh /proc lets uid 0 write sysctls even without capabilities (kernel.core_pattern would run a
    # program as root on the host): its writable corners are bound read-only over themselves.
    for entry in PROC_READ_ONLY:
        if Path(entry).exists():
            args += ["--ro-bind", entry, entry]
    tmp_size = ["--size", str(plan.tmp_size_mb * MB)] if held.tmp_size else []
    hidden_size = ["--size", str(HIDDEN_TMPFS_MB * MB)] if held.tmp_size else []
    mounts: list[tuple[Path, list[str]]] = [(Path("/tmp"), [*tmp_size, "--tmpfs", "/tmp"])]
    hidden_dirs = [*plan.hidden, *(d for d in RUN_DIRS if not d.is_symlink())]
    for path in hidden_dirs:
        if path.is_dir():
            mounts.append((path, [*hidden_size, "--tmpfs", str(path)]))
        elif path.exists():
            mounts.append((path, ["--ro-bind", "/dev/null", str(path)]))
    for path in (*plan.hidden_files, *system_secrets()):
        if path.is_dir():
            mounts.append((path, [*hidden_size, "--tmpfs", str(path)]))
        elif path.is_file():
            mounts.append((path, ["--ro-bind", "/dev/null", str(path)]))
    # --ro-bind follows a symlinked source, so a program reached through a symlink keeps its name.
    readable = [*plan.readable, *resolver_dirs()]
    mounts += [(p, ["--ro-bind", str(p), str(p)]) for p in readable if p.exists()]
    mounts += [(p, ["--bind", str(p), str(p)]) for p in plan.writable if p.exists()]
    # Parents before children: a bind inside a hidden directory lands on top of its tmpfs, and a read-only
    # file inside the writable worktree (its .git) on top of the worktree's bind.
    for _, mount in sorted(mounts, key=lambda item: len(item[0].parts)):
        args += mount
    return args


def system_secrets() -> list[Path]:
    found: list[Path] = []
    for pattern in SYSTEM_SECRETS:
        path = Path(pattern)
        found += sorted(path.parent.glob(path.name)) if "*" in pattern else [path]
    return found


def resolver_dirs() -> list[Path]:
    """/etc/resolv.conf often points into /run (systemd-resolved): that directory stays readable."""
    target = Path("/etc/resolv.conf").resolve()
    return [target.parent] if any(target.is_relative_to(d.resolve()) for d in RUN_DIRS) else []


def _rlimit_prefix(plan: SandboxPlan, *, data: bool, nproc: bool) -> list[str]:
    """prlimit for the per-process limits; memory as RLIMIT_DATA (RLIMIT_AS breaks Node's WebAssembly)."""
    prlimit = shutil.which("prlimit")
    limits = [
        f"--{flag}={value}"
        for flag, value in (
            ("cpu", plan.cpu_seconds),
            ("data", plan.memory_mb * MB if data else 0),
            ("fsize", plan.file_size_mb * MB),
            ("nproc", plan.max_processes if nproc else 0),
        )
        if value > 0
    ]
    if prlimit is None or not limits:
        return []
    return [prlimit, *limits, "--"]


def _die_with_worker_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


# -------------------------------------------------------------------------------------- plans


def git_metadata(worktree: Path) -> list[Path]:
    """A linked worktree's git metadata, all read-only inside: the `.git` file itself (bound over itself
    so it cannot be replaced), its own gitdir (<mirror>/worktrees/<name>) and the shared mirror."""
    marker = worktree / ".git"
    if not marker.is_file():
        return [marker] if marker.is_dir() else []
    text = marker.read_text().strip()
    if not text.startswith("gitdir:"):
        return [marker]
    own = (worktree / text.removeprefix("gitdir:").strip()).resolve()
    common_file = own / "commondir"
    common = (own / common_file.read_text().strip()).resolve() if common_file.is_file() else own.parent.parent
    return [marker.resolve(), *([] if own.is_relative_to(common) else [own]), common]


def denied_networks(settings: Settings) -> list[str]:
    """What an agent with network may still not reach: link-local 169.254.0.0/16 (the cloud metadata
    service hands out the host's cloud credentials there) and the Temporal frontend when it is another
    host (by its addresses now; a frontend on loopback is unreachable anyway)."""
    host, _, _ = settings.temporal_address.rpartition(":")
    remote = _remote_addresses(host.strip("[]"))
    return [METADATA_NETWORK, *(f"{a}/{32 if '.' in a else 128}" for a in remote)]


@functools.cache
def _remote_addresses(host: str) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ()
    found = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return tuple(sorted(a for a in found if not ipaddress.ip_address(a).is_loopback))


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
    *,
    loopback_ports: Sequence[int] = (),
    max_processes: int = 0,
    tmp_size_mb: int = 0,
) -> SandboxPlan:
    config_file = os.environ.get("TICKETFLOW_CONFIG")
    return SandboxPlan(
        mode=mode,
        writable=(worktree.resolve(), *(p.resolve() for p in writable)),
        network=network,
        hidden=tuple(hidden_paths(settings)),
        readable=(*git_metadata(worktree), *interpreter_paths(), *(Path(p) for p in expose)),
        cpu_seconds=limits[0],
        memory_mb=limits[1],
        file_size_mb=limits[2],
        hidden_files=(Path("ticketflow.toml").resolve(), *([Path(config_file)] if config_file else [])),
        loopback_ports=tuple(loopback_ports),
        max_processes=max_processes,
        tmp_size_mb=tmp_size_mb,
        deny_networks=tuple(denied_networks(settings)) if network else (),
    )


def config_plan(settings: Settings, agent: str, worktree: Path, writable: Sequence[Path]) -> SandboxPlan:
    """The plan of the configured agent `agent`: its mode, network, loopback ports and limits."""
    config = settings.agents[agent]
    # Settings validates this when it loads; settings changed in code afterwards are checked here.
    if problem := settings.forbidden_loopback_port(agent):
        raise ApplicationError(problem, type="SandboxMisconfigured", non_retryable=True)
    return agent_plan(
        settings,
        config.sandbox_mode,
        config.network,
        worktree,
        writable,
        (config.cpu_seconds, config.memory_mb, config.file_size_mb),
        loopback_ports=config.loopback_ports,
        max_processes=config.max_processes,
        tmp_size_mb=config.tmp_size_mb,
    )


def checks_plan(settings: Settings, worktree: Path) -> SandboxPlan:
    """Test runs (run_checks, the ollama agent's run_tests): agent-written code, so the same sandbox, the
    default process and /tmp limits, no host loopback and no network unless checks_network."""
    defaults = AgentConfig.model_fields
    return agent_plan(
        settings,
        settings.checks_sandbox,
        settings.checks_network,
        worktree,
        [],
        (0, 0, 0),
        max_processes=int(defaults["max_processes"].default),
        tmp_size_mb=int(defaults["tmp_size_mb"].default),
    )


def sweep_leftovers() -> list[str]:
    """Remove the network namespaces and cgroups of sandbox launchers that died (SIGKILL) on this host.
    A worker calls it before it polls; live launchers of other workers are left alone."""
    try:
        removed = jail.sweep()
    except OSError as exc:
        log.warning("could not sweep leftover sandbox namespaces and cgroups: %s", exc)
        return []
    if removed:
        log.warning("removed %d sandbox leftover(s) of dead launchers: %s", len(removed), ", ".join(removed))
    return removed

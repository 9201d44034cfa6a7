"""The sandbox launcher: a network namespace behind pasta, and a cgroup, around one sandboxed command.

Run as the prefix of a sandboxed argv (`sandbox.wrap` builds it), standard library only and by its file
path with `python -I`, so nothing in the agent's worktree or environment can shadow it:

    python -I -S jail.py [--parent PID] [--netns PORTS [--deny NETS] | --pasta PORTS] [--pids N]
                         [--memory-mb N] -- argv

--parent PID    the worker that spawns it: if that process is already gone when the launcher starts (so
                PR_SET_PDEATHSIG could not fire), it cleans up and exits instead of running the command.
--netns PORTS   (root) a fresh named network namespace `tf-<launcher pid>-<random>` with pasta attached:
                outbound TCP/UDP through pasta's user-mode stack, the host's loopback unreachable except
                the listed ports (comma-separated, or `none`), which pasta forwards (-T) to the host's
                127.0.0.1. The command runs inside it through nsenter.
--deny NETS     (with --netns) address/prefix list unreachable from inside (prohibit routes), or `none`.
--pasta PORTS   (not root) the same through pasta's command mode: pasta creates the namespaces itself.
--pids N        cgroup pids.max for everything the command starts (v1 pids hierarchy or cgroup v2).
--memory-mb N   cgroup memory limit (v1 memory.limit_in_bytes, v2 memory.max) for all of it together.

The command runs in the launcher's process group, so the worker's killpg reaches it; SIGTERM, SIGINT and
SIGHUP are also forwarded, and the launcher dies (SIGTERM) with the worker thread that started it. The
namespace and the cgroup are removed in a `finally`; what a SIGKILLed launcher leaves behind is removed by
`sweep()`, which a worker runs when it starts. Setup failures exit 125 with a message: the worker decided
beforehand that this host supports the requested containment, so the launcher fails closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "tf-"
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "ticketflow"
SETUP_FAILED = 125
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class JailError(Exception):
    """The requested containment could not be set up."""


def _run(argv: Sequence[str], timeout: float = 10) -> None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JailError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise JailError(f"{' '.join(argv[:3])} failed: {(done.stderr or done.stdout).strip()[:300]}")


def pasta_options(ports: Sequence[int]) -> list[str]:
    """pasta's switches for an agent: only the listed host loopback ports (-T), nothing inbound, no
    gateway-to-host mapping (so the host's services are not reachable via the gateway address either)."""
    forwarded = ",".join(str(p) for p in ports) if ports else "none"
    return ["--config-net", "-T", forwarded, "-U", "none", "-t", "none", "-u", "none", "--no-map-gw", "-q"]


# ------------------------------------------------------------------------------------------ netns


class NetNamespace:
    """A named network namespace with pasta attached; pasta quits once the namespace is deleted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = NETNS_DIR / name
        self.created = False

    def create(self, ports: Sequence[int], deny: Sequence[str] = ()) -> None:
        ip, pasta = shutil.which("ip"), shutil.which("pasta")
        if ip is None or pasta is None:
            raise JailError("the network sandbox needs `ip` (iproute2) and `pasta` (passt)")
        _run([ip, "netns", "add", self.name])
        self.created = True
        _run([pasta, "--runas", "0", *pasta_options(ports), "--netns", self.name])
        # Destinations the agent may not reach although they are "outside" (the cloud metadata service,
        # a remote Temporal frontend): a prohibit route answers connect() with EACCES, and without
        # CAP_NET_ADMIN the agent cannot remove it.
        for network in deny:
            family = ["-6"] if ":" in network else []
            _run([ip, *family, "-n", self.name, "route", "add", "prohibit", network])

    def delete(self) -> None:
        if self.created or self.path.exists():
            delete_netns(self.name)
            self.created = False


def delete_netns(name: str) -> None:
    ip = shutil.which("ip")
    if ip is not None:
        with contextlib.suppress(JailError):
            _run([ip, "netns", "del", name])
    # `ip netns del` unmounts and unlinks; a file left over (ip missing, a half-made namespace) goes too.
    path = NETNS_DIR / name
    if path.exists():
        with contextlib.suppress(OSError):
            os.unlink(path)


# ----------------------------------------------------------------------------------------- cgroups


def cgroup_version() -> str | None:
    """'v2' (unified hierarchy at /sys/fs/cgroup), 'v1' (per-controller hierarchies) or None."""
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return "v2"
    if (CGROUP_ROOT / "pids" / "cgroup.procs").is_file():
        return "v1"
    return None


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise JailError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from exc


class Cgroup:
    """This run's cgroup(s): `<root>/ticketflow/<name>` (v2), or one per v1 hierarchy (pids, memory)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dirs: list[Path] = []

    def create(self, pids: int, memory_mb: int) -> None:
        version = cgroup_version()
        if version is None:
            raise JailError(f"no cgroup hierarchy with a pids controller under {CGROUP_ROOT}")
        if version == "v2":
            self._create_v2(pids, memory_mb)
        else:
            self._create_v1(pids, memory_mb)

    def _make(self, base: Path) -> Path:
        path = base / GROUP / self.name
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise JailError(f"cannot create cgroup {path}: {exc.strerror or exc}") from exc
        self.dirs.append(path)
        return path

    def _create_v1(self, pids: int, memory_mb: int) -> None:
        if pids > 0:
            _write(self._make(CGROUP_ROOT / "pids") / "pids.max", str(pids))
        if memory_mb > 0:
            if not (CGROUP_ROOT / "memory" / "cgroup.procs").is_file():
                raise JailError(f"no memory cgroup hierarchy under {CGROUP_ROOT}")
            path = self._make(CGROUP_ROOT / "memory")
            _write(path / "memory.limit_in_bytes", str(memory_mb * 1024 * 1024))
            swap = path / "memory.memsw.limit_in_bytes"  # present only with swap accounting
            if swap.exists():
                _write(swap, str(memory_mb * 1024 * 1024))

    def _create_v2(self, pids: int, memory_mb: int) -> None:
        wanted = [c for c, on in (("pids", pids > 0), ("memory", memory_mb > 0)) if on]
        available = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        missing = [c for c in wanted if c not in available]
        if missing:
            raise JailError(f"cgroup v2 controllers {missing} are not available at {CGROUP_ROOT}")
        group = CGROUP_ROOT / GROUP
        group.mkdir(exist_ok=True)
        for parent in (CGROUP_ROOT, group):
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            for controller in wanted:
                if controller not in enabled:
                    _write(parent / "cgroup.subtree_control", f"+{controller}")
        path = self._make(CGROUP_ROOT)
        if pids > 0:
            _write(path / "pids.max", str(pids))
        if memory_mb > 0:
            _write(path / "memory.max", str(memory_mb * 1024 * 1024))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")

    def join(self, pid: int) -> None:
        for path in self.dirs:
            _write(path / "cgroup.procs", str(pid))

    def destroy(self, grace: float = 3.0, reap: bool = False) -> None:
        for path in self.dirs:
            remove_cgroup(path, grace, reap)
        self.dirs = []


def cgroup_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove_cgroup(path: Path, grace: float = 3.0, reap: bool = False) -> bool:
    """Kill whatever still runs in the cgroup (a daemon that escaped the process group), then remove it.
    A zombie stays in its cgroup until reaped: the launcher (`reap`, a subreaper) reaps its own."""
    deadline = time.monotonic() + grace
    while True:
        for pid in cgroup_pids(path):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if reap:
            _reap_orphans(0)
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except PermissionError:
            return False
        except OSError:  # EBUSY: its processes are still exiting
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


# ------------------------------------------------------------------------------ probes and sweep


def _name() -> str:
    return f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}"


def probe_netns() -> str | None:
    """None when this host can give a command its own network namespace behind pasta; else why not."""
    if os.geteuid() != 0:
        return "the network namespace needs root"
    netns = NetNamespace(_name())
    try:
        netns.create([])
    except JailError as exc:
        return str(exc)
    finally:
        netns.delete()
    return None


def probe_cgroup(pids: bool = True, memory: bool = True) -> str | None:
    """None when this process may create a cgroup with the pids (and memory) limits; else why not."""
    cgroup = Cgroup(_name())
    try:
        cgroup.create(64 if pids else 0, 64 if memory else 0)
    except (JailError, OSError) as exc:
        return str(exc)
    finally:
        cgroup.destroy()
    return None


def _launcher_alive(name: str) -> bool:
    """Names are tf-<launcher pid>-<random>; a name whose process is gone is a leftover."""
    try:
        pid = int(name.removeprefix(PREFIX).split("-", 1)[0])
    except ValueError:
        return False
    return Path(f"/proc/{pid}").exists()


def sweep() -> list[str]:
    """Remove the namespaces and cgroups of launchers that are gone (SIGKILLed); returns their paths."""
    removed: list[str] = []
    if NETNS_DIR.is_dir():
        for path in sorted(NETNS_DIR.glob(f"{PREFIX}*")):
            if not _launcher_alive(path.name):
                delete_netns(path.name)
                removed.append(str(path))
    bases = [CGROUP_ROOT, CGROUP_ROOT / "pids", CGROUP_ROOT / "memory"]
    for base in bases:
        group = base / GROUP
        if not group.is_dir():
            continue
        for path in sorted(group.glob(f"{PREFIX}*")):
            if path.is_dir() and not _launcher_alive(path.name) and remove_cgroup(path):
                removed.append(str(path))
    return removed


# ------------------------------------------------------------------------------------------- main


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _die_with_parent(parent: int | None) -> None:
    """SIGTERM when the worker (thread) that started us goes away: the finally below still cleans up.
    Also a subreaper: bwrap's namespace init, orphaned when bwrap dies first, is reaped here, not left
    a zombie for a host init that may never reap it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # The worker may be pid 1 itself (a container): only a parent other than the one named is "gone".
    if parent is not None and os.getppid() != parent:
        raise _Stop(int(signal.SIGTERM))


def _reap_orphans(grace: float = 2.0) -> None:
    """Reap the descendants reparented to us (bwrap's init, pasta after its namespace went), waiting up to
    `grace` seconds for those still running; 0 reaps only what has already exited."""
    deadline = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


def _ports(value: str) -> list[int]:
    if value in ("", "none"):
        return []
    ports = [int(p) for p in value.split(",")]
    if any(not 0 < p < 65536 for p in ports):
        raise JailError(f"bad port list {value!r}")
    return ports


def _networks(value: str) -> list[str]:
    if value in ("", "none"):
        return []
    networks = value.split(",")
    for network in networks:
        address, _, prefix = network.partition("/")
        if not address or not all(c in "0123456789abcdefABCDEF.:" for c in address) or not prefix.isdigit():
            raise JailError(f"bad network {network!r} (want address/prefix)")
    return networks


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    if "--" not in argv:
        raise JailError(
            "usage: jail.py [--parent PID] [--netns PORTS [--deny NETS] | --pasta PORTS] [--pids N] "
            "[--memory-mb N] -- argv"
        )
    split = list(argv).index("--")
    options, command = list(argv[:split]), list(argv[split + 1 :])
    if len(options) % 2 or not command:
        raise JailError(f"bad options {options!r} or an empty command")
    parsed = dict(zip(options[::2], options[1::2], strict=True))
    unknown = set(parsed) - {"--parent", "--netns", "--deny", "--pasta", "--pids", "--memory-mb"}
    if unknown:
        raise JailError(f"unknown options {sorted(unknown)}")
    return parsed, command


def main(argv: Sequence[str]) -> int:
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        if child is None:
            raise _Stop(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    for sig in _FORWARDED:
        signal.signal(sig, on_signal)
    name = _name()
    netns = NetNamespace(name)
    cgroup = Cgroup(name)
    try:
        options, command = parse(argv)
        _die_with_parent(int(options["--parent"]) if "--parent" in options else None)
        pids, memory_mb = int(options.get("--pids", "0")), int(options.get("--memory-mb", "0"))
        if pids > 0 or memory_mb > 0:
            cgroup.create(pids, memory_mb)
        if "--netns" in options:
            netns.create(_ports(options["--netns"]), _networks(options.get("--deny", "none")))
            command = [shutil.which("nsenter") or "nsenter", f"--net={netns.path}", "--", *command]
        elif "--pasta" in options:
            pasta = shutil.which("pasta") or "pasta"
            command = [pasta, *pasta_options(_ports(options["--pasta"])), "--", *command]

        def enter_cgroup() -> None:
            cgroup.join(os.getpid())

        child = subprocess.Popen(command, preexec_fn=enter_cgroup if cgroup.dirs else None)
        code = child.wait()
        return 128 - code if code < 0 else code
    except _Stop as stop:
        return 128 + stop.signum
    except (JailError, OSError, ValueError, subprocess.SubprocessError) as exc:
        sys.stderr.write(f"ticketflow sandbox: {exc}\n")
        sys.stderr.flush()
        return SETUP_FAILED
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, set(_FORWARDED))
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        netns.delete()
        cgroup.destroy(reap=True)
        _reap_orphans()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

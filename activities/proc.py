"""Running child processes from activities without blocking the worker's event loop.

Every process gets its own process group so a timeout, a stall or a cancelled activity can end it and
everything it started. Output is read line by line: each line can drive a heartbeat and a log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workflows import policy

LineSink = Callable[[str], None]


@dataclass
class ProcessResult:
    exit_code: int | None
    timed_out: bool = False
    stalled: bool = False
    duration_seconds: float = 0.0
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stalled


async def _terminate_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), policy.STALL_KILL_GRACE.total_seconds())
            return
        except TimeoutError:
            continue


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    stall_timeout: float | None = None,
    on_line: LineSink | None = None,
    on_spawn: Callable[[int], None] | None = None,
    tail_lines: int = 200,
) -> ProcessResult:
    """Run argv to completion (or timeout/stall); stdout and stderr are merged, line by line."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    if on_spawn is not None:
        on_spawn(proc.pid)
    tail: deque[str] = deque(maxlen=tail_lines)
    result = ProcessResult(exit_code=None)
    assert proc.stdout is not None
    stream = proc.stdout

    async def pump() -> None:
        while True:
            read = stream.readline()
            raw = await (asyncio.wait_for(read, stall_timeout) if stall_timeout else read)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)

    try:
        await asyncio.wait_for(pump(), timeout)
        result.exit_code = await asyncio.wait_for(
            proc.wait(), max(1.0, timeout - (time.monotonic() - started))
        )
    except TimeoutError:
        elapsed = time.monotonic() - started
        result.timed_out = elapsed >= timeout - 0.5
        result.stalled = not result.timed_out
        await _terminate_group(proc)
    except BaseException:
        # Cancelled activity or worker shutdown: never leave the child running.
        await _terminate_group(proc)
        raise
    finally:
        result.duration_seconds = time.monotonic() - started
        result.tail = list(tail)
    return result


@contextlib.contextmanager
def paused(pid: int | None) -> Iterator[None]:
    """Freeze a process group (SIGSTOP) while we act on its files, e.g. to commit a checkpoint."""
    if pid is None:
        yield
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)

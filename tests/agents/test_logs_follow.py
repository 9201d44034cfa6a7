"""`ticketflow logs ID -f` follows the newest attempt's log live and moves on to the next attempt."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


def test_follow_switches_to_the_next_attempt(tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs" / "T-9"
    logs.mkdir(parents=True)
    first = logs / "run_agent-1-attempt1.log"
    first.write_text("old line\n")
    env = {**os.environ, "TICKETFLOW_STATE_DIR": str(tmp_path / "state"), "TICKETFLOW_CONFIG": os.devnull}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "logs", "T-9", "-f"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if text in lines.get(timeout=0.5):
                    return
            except queue.Empty:
                continue
        raise AssertionError(f"never printed {text!r}")

    try:
        wait_for("old line")
        with first.open("a") as handle:
            handle.write("live line\n")
        wait_for("live line")
        time.sleep(0.05)
        (logs / "run_agent-1-attempt2.log").write_text("second attempt\n")
        wait_for("run_agent-1-attempt2.log")
        wait_for("second attempt")
    finally:
        proc.kill()
        proc.wait()

"""The `ticketflow` program as a shell runs it: start-up imports, --version, completion, closed pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("activities", "workflows", "workers", "temporalio", "pydantic", "opentelemetry", "rich", "httpx")


def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TICKETFLOW_", "TEMPORAL_"))}
    return {
        **clean,
        "TICKETFLOW_HOME": str(tmp_path / "home"),
        "TICKETFLOW_CONFIG": os.devnull,
        "TICKETFLOW_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "PYTHONPATH": str(ROOT),
    }


def imported_by(tmp_path: Path, *argv: str) -> tuple[list[str], str]:
    """The modules `ticketflow ARGV` has loaded when it exits, and what it printed."""
    code = (
        "import json, sys\n"
        "from clients import cli\n"
        "try:\n"
        f"    cli.main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stdout.flush()\n"
        "print('\\nMODULES' + json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        cwd=tmp_path,
        check=True,
    )
    out, _, modules = done.stdout.rpartition("\nMODULES")
    return json.loads(modules), out


@pytest.mark.parametrize("argv", [("--help",), ("--version",), ("submit", "--help"), ("completion", "bash")])
def test_help_version_and_completion_import_nothing_heavy(tmp_path: Path, argv: tuple[str, ...]) -> None:
    modules, out = imported_by(tmp_path, *argv)
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy
    assert out.strip()


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "--version"],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        cwd=ROOT,
        check=True,
    )
    assert done.stdout == f"ticketflow {version('ticketflow')}\n"


def test_bash_completion_script_is_valid_and_knows_the_commands(tmp_path: Path) -> None:
    _, script = imported_by(tmp_path, "completion", "bash")
    path = tmp_path / "ticketflow.bash"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    for word in ("submit", "worktrees", "retry-failed", "--guidance", "--failed-older-than"):
        assert word in script, word
    _, zsh = imported_by(tmp_path, "completion", "zsh")
    assert zsh.startswith("#compdef ticketflow")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`ticketflow logs ID | head -1`: the reader goes away; no traceback, exit status 141."""
    logs = tmp_path / "home" / "logs" / "t-1"
    logs.mkdir(parents=True)
    (logs / "agent-1.log").write_text("".join(f"line {n}\n" for n in range(200_000)))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from clients.cli import entry; entry()", "logs", "t-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env(tmp_path), "TICKETFLOW_STATE_DIR": str(tmp_path / "home")},
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"==> agent-1.log <==\n"
    proc.stdout.close()
    code = proc.wait(30)
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141


def test_help_is_fast(tmp_path: Path) -> None:
    """CPU time of `--help` in a child, well under the ~1 s it took when every command's imports loaded."""
    code = (
        "import resource, subprocess, sys\n"
        "argv = [sys.executable, '-m', 'clients.cli', '--help']\n"
        "subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)\n"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(usage.ru_utime + usage.ru_stime)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(tmp_path), cwd=ROOT, check=True
    )
    assert float(done.stdout) < 0.5, done.stdout

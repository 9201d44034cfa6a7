"""Run every benchmark, each in its own process, and summarise their last-line JSON figures.

`.venv/bin/python -m bench.run_all` is the full run that docs/benchmarks.md records (under 15 minutes on
a 2-core machine); `--quick` runs CI-sized versions. Each script's own output is echoed to stderr with
its name as a prefix; stdout gets a summary table and, as its last line, one JSON object with every
script's figures (or why there are none: missing, failed, timed out, no JSON).
Exit status: 1 when a script that exists failed, else 0 (missing scripts are reported, not failures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import machine

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bench:
    name: str
    headline: tuple[str, ...]  # the figures the summary table shows, those present
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    timeout: float = 300
    module: str = ""  # bench/<module>.py when one script runs under two names

    @property
    def script(self) -> str:
        return self.module or self.name


BENCHES = (
    Bench("overhead", ("ratio",), quick=("--count", "50", "--rounds", "1", "--warmup", "5")),
    Bench("concurrency", ("ratio_vs_one",), quick=("--count", "4", "--agent-seconds", "1")),
    # The same, with no-op classify/checks/review/PR: what orchestration alone costs 16 agents.
    Bench(
        "concurrency_agent_only",
        ("ratio_vs_one",),
        full=("--stages", "agent"),
        quick=("--count", "4", "--agent-seconds", "1", "--stages", "agent"),
        module="concurrency",
    ),
    Bench("recovery", ("restart_to_agent_running_seconds", "steps_redone")),
    Bench("limit_storm", ("calls_while_limited", "reset_to_last_resume_seconds")),
    Bench("workspace", ("ratio", "transfer_ratio"), quick=("--files", "2000", "--rounds", "1")),
    Bench("footprint", ("rss_blocked_mb",), quick=("--count", "30"), timeout=420),
)


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed, missing, timeout, no-json
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def quick_flag(module: str) -> list[str]:
    """Scripts we do not own get `--quick` if their --help offers it."""
    helped = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return ["--quick"] if "--quick" in helped.stdout else []


def last_json(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def run_one(bench: Bench, quick: bool) -> Outcome:
    module = f"bench.{bench.script}"
    if not (ROOT / "bench" / f"{bench.script}.py").is_file():
        return Outcome(bench.name, "missing", detail=f"bench/{bench.script}.py does not exist yet")
    args = list(bench.quick if quick else bench.full)
    if quick and not bench.quick:
        args = quick_flag(module)
    lines: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            print(f"[{bench.name}] {line.rstrip()}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=bench.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return Outcome(
            bench.name, "timeout", time.perf_counter() - started, detail=f"over {bench.timeout:.0f}s"
        )
    reader.join(10)
    seconds = time.perf_counter() - started
    figures = last_json(lines)
    if code != 0:
        tail = next((line for line in reversed(lines) if line.strip()), "")
        return Outcome(bench.name, "failed", seconds, detail=f"exit {code}: {tail[-200:]}")
    if figures is None:
        return Outcome(bench.name, "no-json", seconds, detail="its last line is not a JSON object")
    return Outcome(bench.name, "ok", seconds, figures)


def headline(bench: Bench, outcome: Outcome) -> str:
    shown = [f"{key}={outcome.figures[key]}" for key in bench.headline if key in outcome.figures]
    return ", ".join(shown) or outcome.detail


def meets_target(figures: dict[str, Any]) -> bool | None:
    """Scripts name their verdict `meets_target` or `targets_met`."""
    for key in ("meets_target", "targets_met"):
        if isinstance(figures.get(key), bool):
            return bool(figures[key])
    return None


def table(benches: Sequence[Bench], outcomes: Sequence[Outcome]) -> str:
    rows = [("benchmark", "status", "seconds", "meets target", "figure")]
    for bench, outcome in zip(benches, outcomes, strict=True):
        meets = meets_target(outcome.figures)
        rows.append(
            (
                bench.name,
                outcome.status,
                f"{outcome.seconds:.1f}",
                "-" if meets is None else ("yes" if meets else "NO"),
                headline(bench, outcome),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs (about two minutes)")
    parser.add_argument("--only", nargs="*", default=None, help="run just these benchmarks")
    parser.add_argument("--out", type=Path, help="also write the final JSON object to this file")
    args = parser.parse_args(argv)
    benches = [b for b in BENCHES if args.only is None or b.name in args.only]
    started, when, load_before = time.perf_counter(), datetime.now(UTC), os.getloadavg()
    outcomes = [run_one(bench, args.quick) for bench in benches]
    total, load_after = time.perf_counter() - started, os.getloadavg()
    print(table(benches, outcomes))
    print(f"total {total:.1f}s ({'quick' if args.quick else 'full'} run), 5-min load {load_after[1]:.1f}")
    summary = {
        "benchmark": "all",
        "mode": "quick" if args.quick else "full",
        "date": when.isoformat(timespec="seconds"),
        "total_s": round(total, 1),
        "machine": machine(),
        # Other work on the machine skews every figure: a load well above the CPU count says so.
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "load_avg_1_5_15_after": [round(x, 2) for x in load_after],
        "results": {
            o.name: o.figures if o.status == "ok" else {"status": o.status, "detail": o.detail}
            for o in outcomes
        },
        "missing": [o.name for o in outcomes if o.status == "missing"],
        "failed": [o.name for o in outcomes if o.status not in ("ok", "missing")],
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

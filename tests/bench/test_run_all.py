"""bench/run_all.py's bookkeeping: last-line JSON, missing scripts, the summary table (no benchmark runs)."""

from __future__ import annotations

import json

import pytest

from bench import run_all
from bench.run_all import Bench, Outcome, last_json, meets_target, run_one, table


def test_last_json_takes_the_last_non_empty_line_only() -> None:
    assert last_json(["round 1", '{"ratio": 0.9}', "", "  "]) == {"ratio": 0.9}
    assert last_json(['{"ratio": 0.9}', "done"]) is None
    assert last_json(["[1, 2]"]) is None
    assert last_json([]) is None


def test_a_missing_script_is_reported_not_run() -> None:
    outcome = run_one(Bench("not_written_yet", ("ratio",)), quick=True)
    assert (outcome.status, outcome.detail) == ("missing", "bench/not_written_yet.py does not exist yet")


def test_every_listed_benchmark_names_a_script_under_bench() -> None:
    names = [bench.name for bench in run_all.BENCHES]
    assert len(names) == len(set(names))
    assert {"overhead", "concurrency", "recovery", "limit_storm", "workspace", "footprint"} <= set(names)


@pytest.mark.parametrize(
    ("figures", "expected"),
    [({"meets_target": True}, True), ({"targets_met": False}, False), ({"ratio": 1.0}, None)],
)
def test_either_verdict_key_counts(figures: dict[str, object], expected: bool | None) -> None:
    assert meets_target(figures) is expected


def test_table_shows_status_verdict_and_headline_figures() -> None:
    benches = [Bench("a", ("ratio", "other")), Bench("b", ("ratio",))]
    outcomes = [
        Outcome("a", "ok", 1.25, {"ratio": 2.0, "other": 3, "meets_target": False}),
        Outcome("b", "missing", detail="bench/b.py does not exist yet"),
    ]
    lines = table(benches, outcomes).splitlines()
    assert lines[0].split() == ["benchmark", "status", "seconds", "meets", "target", "figure"]
    assert lines[1].split() == ["a", "ok", "1.2", "NO", "ratio=2.0,", "other=3"]
    assert "missing" in lines[2] and "does not exist yet" in lines[2]


def test_main_prints_one_json_object_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_all.main(["--only"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["benchmark"] == "all" and summary["results"] == {} and summary["failed"] == []

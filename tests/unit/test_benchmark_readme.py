"""The tables of docs/benchmarks.md come from benchmarks/results/latest.json; the regression gate works."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_tables_equal_latest_json() -> None:
    data = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    block = report.readme_block((ROOT / "docs" / "benchmarks.md").read_text())
    assert block is not None, "docs/benchmarks.md lost its generated benchmark tables (the markers)"
    assert block == report.markdown_table(data), (
        "docs/benchmarks.md's benchmark tables differ from benchmarks/results/latest.json: "
        "run `python -m benchmarks --readme` (never edit either by hand)"
    )


def test_latest_json_has_every_ratio_of_the_targets() -> None:
    data = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    assert set(data["ratios"]) == {t.key for t in report.TARGETS}
    assert data["extra"]["machine"]["cpu_model"] and data["extra"]["machine"]["cpus"]


def test_compare_flags_a_figure_below_seven_tenths() -> None:
    old = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    same = copy.deepcopy(old)
    assert report.compare(same, old)[1]
    slower = copy.deepcopy(old)
    slower["relay_sqs_events_per_s"] = old["relay_sqs_events_per_s"] * 0.6
    text, ok = report.compare(slower, old)
    assert not ok and "REGRESSION" in text
    # Lower is better for latencies: 1.5x the latency is 0.67x.
    later = copy.deepcopy(old)
    later["e2e_commit_to_sqs_p99_ms"] = old["e2e_commit_to_sqs_p99_ms"] * 1.5
    assert not report.compare(later, old)[1]

"""The fault ledger, short: the whole system in real processes under a seeded fault schedule (`make chaos`
runs the 5-minute version). Every committed event handled once, in order per aggregate, nothing stuck."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_chaos_ledger_is_clean_after_a_short_run_of_faults(tmp_path: Path) -> None:
    output = tmp_path / "chaos.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHAOS_")},
        "CHAOS_SECONDS": "25",
        "CHAOS_SEED": "8",
        "CHAOS_OUTPUT": str(output),
    }
    run = subprocess.run(
        [sys.executable, "-m", "chaos"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert output.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(output.read_text())
    summary = run.stdout[-3000:]
    assert result["committed"] > 500, summary
    assert result["faults_total"] >= 12, summary
    assert {k: result[k] for k in ("lost", "handled_twice", "order_violations", "stuck")} == {
        "lost": 0,
        "handled_twice": 0,
        "order_violations": 0,
        "stuck": 0,
    }, summary
    assert result["unexpected_dead_letters"] == 0, summary
    assert result["sqs_dlq_messages"] == 0, summary
    assert result["dead_letters"] == result["dead_letters_expected_oversized"] > 0, summary
    assert run.returncode == 0, summary

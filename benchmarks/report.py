"""The suite's output: the table, benchmarks/results/latest.json and the plots."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.infra import percentile

KEYS = (
    "db_write_limit_tps",
    "api_bookings_per_s",
    "api_p50_ms",
    "api_p99_ms",
    "relay_sqs_events_per_s",
    "relay_null_events_per_s",
    "relay_2proc_sqs_events_per_s",
    "e2e_commit_to_sqs_p50_ms",
    "e2e_commit_to_sqs_p99_ms",
    "e2e_commit_to_payment_p99_ms",
    "payments_events_per_s",
    "relay_rss_mb",
    "seed_baseline_events_per_s",
)


@dataclass(frozen=True)
class Target:
    key: str
    text: str  # the target as the issue states it
    ratio: Callable[[dict[str, float], dict[str, Any]], float]  # achieved / required: >= 1.0 means met
    achieved: Callable[[dict[str, float], dict[str, Any]], str]  # the achieved value in the target's terms


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


TARGETS = (
    Target(
        "api_bookings_per_s",
        ">= 0.4 x db_write_limit",
        lambda r, x: _div(r["api_bookings_per_s"], 0.4 * r["db_write_limit_tps"]),
        lambda r, x: f"{_div(r['api_bookings_per_s'], r['db_write_limit_tps']):.2f} x db_write_limit",
    ),
    Target(
        "relay_sqs_events_per_s",
        ">= 0.9 x fauxqs limit",
        lambda r, x: _div(r["relay_sqs_events_per_s"], 0.9 * x["fauxqs_limit_events_per_s"]),
        lambda r, x: (
            f"{_div(r['relay_sqs_events_per_s'], x['fauxqs_limit_events_per_s']):.2f} x fauxqs limit"
        ),
    ),
    Target(
        "relay_sqs_events_per_s",
        ">= db_write_limit",
        lambda r, x: _div(r["relay_sqs_events_per_s"], r["db_write_limit_tps"]),
        lambda r, x: f"{_div(r['relay_sqs_events_per_s'], r['db_write_limit_tps']):.2f} x db_write_limit",
    ),
    Target(
        "relay_null_events_per_s",
        ">= 30,000",
        lambda r, x: _div(r["relay_null_events_per_s"], 30_000),
        lambda r, x: f"{_div(r['relay_null_events_per_s'], 30_000):.2f} x 30,000",
    ),
    Target(
        "e2e_commit_to_sqs_p50_ms",
        "<= 5 ms",
        lambda r, x: _div(5.0, r["e2e_commit_to_sqs_p50_ms"]),
        lambda r, x: f"{r['e2e_commit_to_sqs_p50_ms']:.1f} ms",
    ),
    Target(
        "e2e_commit_to_sqs_p99_ms",
        "<= 25 ms",
        lambda r, x: _div(25.0, r["e2e_commit_to_sqs_p99_ms"]),
        lambda r, x: f"{r['e2e_commit_to_sqs_p99_ms']:.1f} ms",
    ),
    Target(
        "payments_events_per_s",
        ">= 3,000",
        lambda r, x: _div(r["payments_events_per_s"], 3_000),
        lambda r, x: f"{_div(r['payments_events_per_s'], 3_000):.2f} x 3,000",
    ),
    Target(
        "relay_rss_mb",
        "<= 150 MB, flat",
        lambda r, x: _div(150.0, r["relay_rss_mb"]),
        lambda r, x: f"{r['relay_rss_mb']:.0f} MB, {_flat(x)}",
    ),
    Target(
        "seed_baseline_events_per_s",
        "relay_sqs >= 1,000 x this",
        lambda r, x: _div(r["relay_sqs_events_per_s"], 1000 * r["seed_baseline_events_per_s"]),
        lambda r, x: f"{_div(r['relay_sqs_events_per_s'], r['seed_baseline_events_per_s']):,.0f} x",
    ),
)


def _flat(extra: dict[str, Any]) -> str:
    rss = extra.get("relay_rss", {})
    during = rss.get("rss_mb_during_drain_after_1s")
    small = rss.get("peak_mb_20k_backlog")
    if not during or small is None:
        return "flatness not measured"
    return f"{during['min']:.1f}-{during['max']:.1f} MB while draining, {small:.1f} MB for a 20k backlog"


_UNITS = {
    "db_write_limit_tps": "tx/s",
    "api_bookings_per_s": "req/s",
    "api_p50_ms": "ms",
    "api_p99_ms": "ms",
    "relay_sqs_events_per_s": "ev/s",
    "relay_null_events_per_s": "ev/s",
    "relay_2proc_sqs_events_per_s": "ev/s",
    "e2e_commit_to_sqs_p50_ms": "ms",
    "e2e_commit_to_sqs_p99_ms": "ms",
    "e2e_commit_to_payment_p99_ms": "ms",
    "payments_events_per_s": "ev/s",
    "relay_rss_mb": "MB",
    "seed_baseline_events_per_s": "ev/s",
}


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: dict[str, float], extra: dict[str, Any], spread: dict[str, Any]) -> str:
    """One table: every key, its min-max over the runs, and each target with what was achieved."""
    targets: dict[str, list[Target]] = {}
    for t in TARGETS:
        targets.setdefault(t.key, []).append(t)
    rows = [("figure", "median", "min-max", "unit", "target", "achieved", "")]
    for key in KEYS:
        value = results[key]
        s = spread.get(key)
        span = f"{_fmt(s['min'])}-{_fmt(s['max'])}" if s else ""
        ts = targets.get(key, [])
        if not ts:
            rows.append((key, _fmt(value), span, _UNITS[key], "", "", ""))
        for i, t in enumerate(ts):
            verdict = "met" if t.ratio(results, extra) >= 1.0 else "MISSED"
            first = i == 0
            rows.append(
                (
                    key if first else "",
                    _fmt(value) if first else "",
                    span if first else "",
                    _UNITS[key] if first else "",
                    t.text,
                    t.achieved(results, extra),
                    verdict,
                )
            )
    limit = extra["fauxqs_limit_events_per_s"]
    rows.append(("fauxqs limit (bare aiobotocore sender)", _fmt(limit), "", "ev/s", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in (1, 2) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: dict[str, float], extra: dict[str, Any], spread: dict[str, Any]) -> str:
    """The same table in Markdown, for docs/performance.md."""
    targets: dict[str, list[Target]] = {}
    for t in TARGETS:
        targets.setdefault(t.key, []).append(t)
    lines = [
        "| figure | median of 3 | min - max | target | achieved | |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for key in KEYS:
        s = spread.get(key)
        span = f"{_fmt(s['min'])} - {_fmt(s['max'])}" if s else ""
        value = f"{_fmt(results[key])} {_UNITS[key]}"
        ts = targets.get(key, [])
        if not ts:
            lines.append(f"| `{key}` | {value} | {span} | | | |")
        for i, t in enumerate(ts):
            verdict = "met" if t.ratio(results, extra) >= 1.0 else "**missed**"
            head = f"| `{key}` | {value} | {span} |" if i == 0 else "| | | |"
            lines.append(f"{head} {t.text} | {t.achieved(results, extra)} | {verdict} |")
    limit = extra["fauxqs_limit_events_per_s"]
    lines.append(f"| fauxqs limit (bare aiobotocore sender, `extra`) | {_fmt(limit)} ev/s | | | | |")
    return "\n".join(lines)


def _divs(a: float, b: float) -> str:
    return f"{a / b:,.0f}" if b else "n/a"


def targets_summary(results: dict[str, float], extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in TARGETS:
        ratio = t.ratio(results, extra)
        out[f"{t.key} {t.text}"] = {"ratio": round(ratio, 3), "met": bool(ratio >= 1.0)}
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["memory_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
        info["load_average_at_start"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        pass
    return info


def write_json(path: Path, results: dict[str, float], spread: dict[str, Any], extra: dict[str, Any]) -> None:
    data: dict[str, Any] = {key: _round(results[key]) for key in KEYS}
    data["spread"] = spread
    data["extra"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_round) + "\n")


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return round(value, 3)
    return value


# -- plots ----------------------------------------------------------------------------------------------


def _buckets(
    offsets: list[float], values: list[float], width: float
) -> tuple[list[float], list[float], list[float]]:
    groups: dict[int, list[float]] = {}
    for o, v in zip(offsets, values, strict=True):
        groups.setdefault(math.floor(o / width), []).append(v)
    keys = sorted(groups)
    return (
        [(k + 0.5) * width for k in keys],
        [percentile(groups[k], 50) for k in keys],
        [percentile(groups[k], 99) for k in keys],
    )


def plot_steady(path: Path, runs: list[Any], rate: int, warmup: float) -> None:
    """Outbox backlog and end-to-end latency over time, one colour per pass (SQS / payment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    colours = {"sqs": "tab:blue", "payments": "tab:orange"}
    names = {"sqs": "commit -> SQS accepted", "payments": "commit -> payment row"}
    for run in runs:
        c = colours[run.consumer]
        t = [x for x, _ in run.backlog]
        ax1.plot(t, [b for _, b in run.backlog], color=c, lw=1, label=f"pass '{run.consumer}'")
        x, p50, p99 = _buckets(
            run.warmup_offsets + run.commit_offsets, run.warmup_latencies_ms + run.latencies_ms, 0.5
        )
        ax2.plot(x, p50, color=c, lw=1.2, label=f"{names[run.consumer]} p50")
        ax2.plot(x, p99, color=c, lw=1, ls="--", label=f"{names[run.consumer]} p99")
    for ax in (ax1, ax2):
        ax.axvspan(-warmup, 0, color="0.9", zorder=0)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("events in the outbox")
    ax1.set_title(f"Steady load: {rate:,} bookings/s (grey: warm-up, not counted)")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.set_ylabel("latency per 0.5 s (ms)")
    ax2.set_xlabel("seconds since the first measured commit")
    ax2.set_yscale("log")
    ax2.axhline(5, color="green", lw=0.8, ls=":", label="target: commit -> SQS p50 5 ms")
    ax2.axhline(25, color="red", lw=0.8, ls=":", label="target: commit -> SQS p99 25 ms")
    low, high = ax2.get_ylim()
    low, high = min(low, 1.0), max(high, 40.0)
    ax2.set_yticks([t for t in (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500) if low <= t <= high])
    ax2.set_ylim(low, high)
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.legend(loc="upper right", fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drain(path: Path, drains: dict[str, Any]) -> None:
    """Backlog and relay RSS while draining 100,000 events (the first run of each configuration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for label, result in drains.items():
        ax1.plot([t for t, _ in result.backlog], [b for _, b in result.backlog], lw=1.2, label=label)
        ax2.plot([t for t, _ in result.rss], [m for _, m in result.rss], lw=1.2, label=label)
    ax1.set_ylabel("events in the outbox")
    ax1.set_title("Draining a backlog of 100,000 events")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("relay RSS (MB, largest process)")
    ax2.set_xlabel("seconds since the relay started")
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

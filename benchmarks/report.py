"""The suite's output: the table, benchmarks/results/latest.json and the plots."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.infra import percentile

# The figures (medians over the runs), in table order.
KEYS = (
    "db_write_limit_tps",
    "flight_insert_alone_tps",
    "api_bookings_per_s",
    "api_p50_ms",
    "api_p99_ms",
    "bare_sender_events_per_s",
    "relay_sqs_events_per_s",
    "bare_sql_events_per_s",
    "relay_null_events_per_s",
    "pinned_unpinned_events_per_s",
    "pinned_events_per_s",
    "bare_receiver_events_per_s",
    "payments_events_per_s",
    "e2e_rate_per_s",
    "e2e_commit_to_sqs_p50_ms",
    "e2e_commit_to_sqs_p99_ms",
    "relay_rss_mb",
)

_UNITS = {
    "db_write_limit_tps": "tx/s",
    "flight_insert_alone_tps": "tx/s",
    "api_bookings_per_s": "req/s",
    "api_p50_ms": "ms",
    "api_p99_ms": "ms",
    "bare_sender_events_per_s": "ev/s",
    "relay_sqs_events_per_s": "ev/s",
    "bare_sql_events_per_s": "ev/s",
    "relay_null_events_per_s": "ev/s",
    "pinned_unpinned_events_per_s": "ev/s",
    "pinned_events_per_s": "ev/s",
    "bare_receiver_events_per_s": "ev/s",
    "payments_events_per_s": "ev/s",
    "e2e_rate_per_s": "bookings/s",
    "e2e_commit_to_sqs_p50_ms": "ms",
    "e2e_commit_to_sqs_p99_ms": "ms",
    "relay_rss_mb": "MB",
}

# Figures where less is better (for --compare: their ratio to an earlier run is old / new).
LOWER_IS_BETTER = {
    "api_p50_ms",
    "api_p99_ms",
    "e2e_commit_to_sqs_p50_ms",
    "e2e_commit_to_sqs_p99_ms",
    "relay_rss_mb",
    "outbox_tax",
}


@dataclass(frozen=True)
class Target:
    key: str  # in `ratios`
    op: str  # ">=" or "<="
    bound: float
    basis: str  # what the ratio is of, in words

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.bound if self.op == ">=" else value <= self.bound


# Every target is a ratio of two figures of the same run (or a latency at a rate set by the same run).
TARGETS = (
    Target(
        "relay_sqs_over_bare_sender",
        ">=",
        0.9,
        "relay -> SQS / bare sender (relay's client settings, claim size, batches in flight)",
    ),
    Target(
        "relay_null_over_bare_sql",
        ">=",
        0.8,
        "relay -> null sink / bare claim-and-delete loop (one process, same batch size)",
    ),
    Target(
        "payments_over_bare_receiver",
        ">=",
        0.8,
        "payment service / bare receive + delete loop (same queue, same receivers)",
    ),
    Target("api_over_db_limit", ">=", 0.5, "POST /api/flights (wrk) / booking transaction (pgbench)"),
    Target(
        "outbox_tax",
        "<=",
        0.15,
        "1 - booking with outbox event and wake-up / the flight insert alone (pgbench, 4 clients)",
    ),
    Target("e2e_commit_to_sqs_p50_ms", "<=", 5.0, "commit -> SQS p50, 60 s at half the db write limit"),
    Target("e2e_commit_to_sqs_p99_ms", "<=", 25.0, "commit -> SQS p99, 60 s at half the db write limit"),
    Target(
        "pinned_over_unpinned",
        ">=",
        0.8,
        "null-sink relay, last 100,000 of 300,000 events, snapshot held / not held",
    ),
)


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def ratios(results: dict[str, float]) -> dict[str, float]:
    """The targets' ratios from the figures of one run (medians over its runs)."""
    r = results
    return {
        "relay_sqs_over_bare_sender": _div(r["relay_sqs_events_per_s"], r["bare_sender_events_per_s"]),
        "relay_null_over_bare_sql": _div(r["relay_null_events_per_s"], r["bare_sql_events_per_s"]),
        "payments_over_bare_receiver": _div(r["payments_events_per_s"], r["bare_receiver_events_per_s"]),
        "api_over_db_limit": _div(r["api_bookings_per_s"], r["db_write_limit_tps"]),
        "outbox_tax": 1 - _div(r["db_write_limit_tps"], r["flight_insert_alone_tps"]),
        "e2e_commit_to_sqs_p50_ms": r["e2e_commit_to_sqs_p50_ms"],
        "e2e_commit_to_sqs_p99_ms": r["e2e_commit_to_sqs_p99_ms"],
        "pinned_over_unpinned": _div(r["pinned_events_per_s"], r["pinned_unpinned_events_per_s"]),
    }


def _fmt(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _rows(data: dict[str, Any]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    spread = data.get("spread", {})
    targets: list[tuple[str, ...]] = []
    for t in TARGETS:
        value = float(data["ratios"][t.key]) if data["ratios"].get(t.key) is not None else math.nan
        targets.append(
            (t.key, _fmt(value), f"{t.op} {t.bound:g}", "met" if t.met(value) else "MISSED", t.basis)
        )
    figures: list[tuple[str, ...]] = []
    for key in KEYS:
        figure = data.get(key)
        s = spread.get(key)
        span = f"{_fmt(s['min'])} - {_fmt(s['max'])}" if s else ""
        figures.append((key, _fmt(math.nan if figure is None else float(figure)), span, _UNITS[key]))
    return targets, figures


def _text(rows: Sequence[tuple[str, ...]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(data: dict[str, Any]) -> str:
    """The targets (ratio, bound, verdict), then every figure with its min - max over the runs."""
    targets, figures = _rows(data)
    return (
        _text([("target", "ratio", "bound", "", "of"), *targets], {1})
        + "\n\n"
        + _text([("figure", "median", "min - max", "unit"), *figures], {1, 2})
    )


def markdown_table(data: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md, from latest.json (tests/unit/test_benchmark_readme.py checks)."""
    targets, figures = _rows(data)
    machine = data.get("extra", {}).get("machine", {})
    lines = [
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} cores; "
        f"each figure the median of {data.get('extra', {}).get('plan', {}).get('runs', '?')} runs.",
        "",
        "| target | ratio | bound | | of |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for key, value, bound, verdict, basis in targets:
        lines.append(
            f"| `{key}` | {value} | {bound} | {verdict if verdict == 'met' else '**missed**'} | {basis} |"
        )
    lines += ["", "| figure | median | min - max | unit |", "| --- | ---: | ---: | --- |"]
    for key, value, span, unit in figures:
        lines.append(f"| `{key}` | {value} | {span} | {unit} |")
    return "\n".join(lines)


README_START = "<!-- benchmarks:table:start (generated by `python -m benchmarks --readme`) -->"
README_END = "<!-- benchmarks:table:end -->"


def readme_block(readme: str) -> str | None:
    """The generated part of docs/benchmarks.md, or None when the markers are missing."""
    if README_START not in readme or README_END not in readme:
        return None
    return readme.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n")


def update_readme(readme: str, data: dict[str, Any]) -> str:
    head, rest = readme.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    return f"{head}{README_START}\n{markdown_table(data)}\n{README_END}{tail}"


def compare(new: dict[str, Any], old: dict[str, Any], floor: float = 0.7) -> tuple[str, bool]:
    """Each figure and ratio of `new` against `old` (>= 1.0: as good or better); ok: none below `floor`."""
    rows = [("figure", "old", "new", "new vs old", "")]
    ok = True
    pairs = [(k, old.get(k), new.get(k)) for k in KEYS]
    pairs += [(k, old.get("ratios", {}).get(k), new.get("ratios", {}).get(k)) for k in new.get("ratios", {})]
    for key, before, after in pairs:
        if before is None or after is None:
            rows.append(
                (
                    key,
                    _fmt(math.nan if before is None else before),
                    _fmt(math.nan if after is None else after),
                    "n/a",
                    "",
                )
            )
            continue
        if key in LOWER_IS_BETTER:
            change = _div(float(before), float(after))
        else:
            change = _div(float(after), float(before))
        bad = not math.isnan(change) and change < floor
        ok = ok and not bad
        rows.append(
            (key, _fmt(float(before)), _fmt(float(after)), f"{change:.2f}x", "REGRESSION" if bad else "")
        )
    return _text(rows, {1, 2, 3}), ok


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
    data: dict[str, Any] = {key: _round(results[key]) for key in KEYS if key in results}
    data["ratios"] = {k: _round(v) for k, v in ratios(results).items()}
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

"""The console's publish rate from the relays' heartbeat counters, and its 15-minute window."""

from __future__ import annotations

import datetime as dt

from txoutbox.console.sampler import Point, RelayRates, Series
from txoutbox.console.security import Guard, is_loopback

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _row(relay: str, seconds: float, total: int) -> dict[str, object]:
    return {"relay_id": relay, "heartbeat_at": T0 + dt.timedelta(seconds=seconds), "published_total": total}


def test_rate_is_growth_between_two_heartbeats_summed_over_live_relays() -> None:
    rates = RelayRates()
    rates.update([_row("a", 0, 1000), _row("b", 0, 0)])
    assert rates.total(["a", "b"]) == 0  # one heartbeat each: no rate yet (a's 1000 came before we looked)
    rates.update([_row("a", 5, 1500), _row("b", 4, 40)])
    assert rates.rate("a") == 100 and rates.rate("b") == 10
    rates.update([_row("a", 5, 1500), _row("b", 4, 40)])  # sampled again before the next heartbeat
    assert rates.total(["a", "b"]) == 110
    assert rates.total(["a"]) == 100  # b stopped beating: it publishes nothing


def test_restarted_counter_and_vanished_relay() -> None:
    rates = RelayRates()
    rates.update([_row("a", 0, 500)])
    rates.update([_row("a", 5, 50)])  # the counter went down: a new process with the same id
    assert rates.rate("a") == 10
    rates.update([])
    assert rates.rate("a") == 0
    rates.update([_row("a", 10, 100)])
    assert rates.rate("a") == 0  # seen anew: no rate until its next heartbeat


def test_series_keeps_fifteen_minutes() -> None:
    series = Series(window_seconds=900, every_seconds=2)
    for t in range(0, 2000, 2):
        series.add(Point(t=float(t), backlog=t, oldest_age_seconds=0, publish_rate=0))
    points = series.points(now=1998)
    assert points[0].t >= 1998 - 900 and points[-1].t == 1998
    assert points[-1].as_dict() == {"t": 1998, "backlog": 1998, "oldest_age_seconds": 0, "publish_rate": 0}


def test_host_check_on_loopback_only_and_loopback_names() -> None:
    guard = Guard(port=8081, loopback=True)
    assert guard.host_allowed("127.0.0.1:8081") and guard.host_allowed("localhost:8081")
    assert not guard.host_allowed("evil.example:8081") and not guard.host_allowed("127.0.0.1:8080")
    assert Guard(port=8081, loopback=False, access_token="t").host_allowed("console.internal")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.com")

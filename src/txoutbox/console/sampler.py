"""The console's memory of the last 15 minutes: a database sample every few seconds in a ring buffer.

Nothing is stored in the database for the charts: a console started now shows what it has seen since.
The publish rate comes from the `published_total` counter each relay writes with its heartbeat (migration
0003): per relay, the growth between its last two heartbeats divided by the time between them, summed over
the live relays. That is exact over one heartbeat period (5 s by default) and needs no clock but the
database's.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WINDOW_SECONDS = 15 * 60
SAMPLE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Point:
    """One sample: when (Unix seconds), backlog, oldest waiting event's age, events published per second."""

    t: float
    backlog: int
    oldest_age_seconds: float
    publish_rate: float

    def as_dict(self) -> dict[str, float]:
        return {
            "t": round(self.t, 3),
            "backlog": self.backlog,
            "oldest_age_seconds": round(self.oldest_age_seconds, 3),
            "publish_rate": round(self.publish_rate, 2),
        }


class RelayRates:
    """Events per second of each relay, from two successive heartbeats' `published_total`."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[dt.datetime, int]] = {}
        self._rate: dict[str, float] = {}

    def update(self, relays: Iterable[Mapping[str, Any]]) -> None:
        """Feed the rows of the relays table (`relay_id`, `heartbeat_at`, `published_total`)."""
        seen: set[str] = set()
        for row in relays:
            relay_id = str(row["relay_id"])
            seen.add(relay_id)
            beat: dt.datetime = row["heartbeat_at"]
            total = int(row["published_total"])
            previous = self._last.get(relay_id)
            if previous is not None and beat > previous[0]:
                elapsed = (beat - previous[0]).total_seconds()
                # A counter that went down belongs to a restarted process reusing the id: count from zero.
                grown = total - previous[1] if total >= previous[1] else total
                self._rate[relay_id] = grown / elapsed
            if previous is None or beat > previous[0]:
                self._last[relay_id] = (beat, total)
        for gone in set(self._last) - seen:
            del self._last[gone]
            self._rate.pop(gone, None)

    def rate(self, relay_id: str) -> float:
        return self._rate.get(relay_id, 0.0)

    def total(self, live: Iterable[str]) -> float:
        """The rate of the whole system: relays that stopped beating publish nothing."""
        return sum(self.rate(r) for r in live)


class Series:
    """The samples of the last `window_seconds`, oldest first."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS, every_seconds: float = SAMPLE_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._points: deque[Point] = deque(maxlen=int(window_seconds / every_seconds) + 2)

    def add(self, point: Point) -> None:
        self._points.append(point)

    def points(self, now: float | None = None) -> list[Point]:
        horizon = (time.time() if now is None else now) - self.window_seconds
        return [p for p in self._points if p.t >= horizon]

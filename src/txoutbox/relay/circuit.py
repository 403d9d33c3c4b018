"""The relay's circuit breaker for broker-wide failures.

Closed: publish normally. Open: the broker is unavailable; nothing is sent until the next probe time
(capped exponential backoff with jitter). Half-open: one worker probes with a small real batch; success
closes the circuit, failure re-opens it with a longer wait. Events' attempts are never touched.
The state changes only through the methods below.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Circuit:
    def __init__(
        self,
        base_seconds: float = 1.0,
        cap_seconds: float = 30.0,
        *,
        _clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_seconds = base_seconds
        self.cap_seconds = cap_seconds
        self._state = CircuitState.CLOSED
        self.reason: str | None = None
        self.opened_at: float | None = None  # monotonic
        self.failures = 0
        self.next_probe_at = 0.0
        self._clock = _clock

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is CircuitState.CLOSED

    def fail(self, reason: str) -> bool:
        """Record a broker-wide failure; return True when this opened a closed circuit."""
        opened = self._state is CircuitState.CLOSED
        if opened:
            self.opened_at = self._clock()
            self.failures = 0
        self.failures += 1
        self._state = CircuitState.OPEN
        self.reason = reason
        bound = min(self.cap_seconds, self.base_seconds * 2 ** (self.failures - 1))
        # Jitter between half and the whole bound: relays that failed together do not probe together.
        self.next_probe_at = self._clock() + random.uniform(bound / 2, bound)  # noqa: S311
        return opened

    def succeed(self) -> float | None:
        """Record a success; return how long the circuit was open when this closed it, else None."""
        if self._state is CircuitState.CLOSED:
            return None
        outage = self._clock() - (self.opened_at or self._clock())
        self._state = CircuitState.CLOSED
        self.reason = None
        self.opened_at = None
        self.failures = 0
        return outage

    def try_probe(self) -> bool:
        """When open and the probe time has come, move to half-open and return True (one caller wins)."""
        if self._state is CircuitState.OPEN and self._clock() >= self.next_probe_at:
            self._state = CircuitState.HALF_OPEN
            return True
        return False

    def abandon_probe(self) -> None:
        """The probe could not be made (the database failed first): open again, due for another probe
        at once; no failure of the broker is counted."""
        if self._state is CircuitState.HALF_OPEN:
            self._state = CircuitState.OPEN

    def seconds_to_probe(self) -> float:
        return max(0.0, self.next_probe_at - self._clock())

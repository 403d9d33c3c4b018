"""The relay's circuit breaker for broker-wide failures.

Closed: publish normally. Open: the broker is unavailable; nothing is sent until the next probe time
(capped exponential backoff with jitter). Half-open: one worker probes with a small real batch; success
closes the circuit, failure re-opens it with a longer wait. Events' attempts are never touched.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, field


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class Circuit:
    base_seconds: float = 1.0
    cap_seconds: float = 30.0
    state: CircuitState = CircuitState.CLOSED
    reason: str | None = None
    opened_at: float | None = None  # monotonic
    failures: int = 0
    probes: int = 0
    next_probe_at: float = 0.0
    _clock: object = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator,no-any-return]

    def fail(self, reason: str) -> bool:
        """Record a broker-wide failure; return True when this opened a closed circuit."""
        opened = self.state is CircuitState.CLOSED
        if opened:
            self.opened_at = self._now()
            self.failures = 0
        self.failures += 1
        self.state = CircuitState.OPEN
        self.reason = reason
        bound = min(self.cap_seconds, self.base_seconds * 2 ** (self.failures - 1))
        # Jitter between half and the whole bound: relays that failed together do not probe together.
        self.next_probe_at = self._now() + random.uniform(bound / 2, bound)  # noqa: S311
        return opened

    def succeed(self) -> float | None:
        """Record a success; return how long the circuit was open when this closed it, else None."""
        if self.state is CircuitState.CLOSED:
            return None
        outage = self._now() - (self.opened_at or self._now())
        self.state = CircuitState.CLOSED
        self.reason = None
        self.opened_at = None
        self.failures = 0
        return outage

    def try_probe(self) -> bool:
        """When open and the probe time has come, move to half-open and return True (one caller wins)."""
        if self.state is CircuitState.OPEN and self._now() >= self.next_probe_at:
            self.state = CircuitState.HALF_OPEN
            self.probes += 1
            return True
        return False

    def seconds_to_probe(self) -> float:
        return max(0.0, self.next_probe_at - self._now())

    @property
    def closed(self) -> bool:
        return self.state is CircuitState.CLOSED

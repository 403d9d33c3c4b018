"""What happens to an event the broker refused: a small policy object that returns a decision."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryLater:
    delay_seconds: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str


Decision = RetryLater | DeadLetter


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, then the dead letters.

    Full jitter (a uniform delay between 0 and the exponential cap) spreads the retries of many events that
    failed together, so they do not come back as one wave.
    """

    max_attempts: int = 10
    base_seconds: float = 1.0
    cap_seconds: float = 300.0

    def decide(self, attempts_before: int, reason: str, *, permanent: bool) -> Decision:
        """`attempts_before`: failed attempts already recorded for the event (this one not included)."""
        if permanent:
            return DeadLetter(reason)
        attempts = attempts_before + 1
        if attempts >= self.max_attempts:
            return DeadLetter(f"gave up after {attempts} attempts; last error: {reason}")
        return RetryLater(random.uniform(0, self.backoff(attempts)))  # noqa: S311 - jitter, not security

    def backoff(self, attempts: int) -> float:
        """The upper bound of the delay after `attempts` failures."""
        return float(min(self.cap_seconds, self.base_seconds * 2 ** (attempts - 1)))

"""Retry policy, circuit breaker and batch packing: the relay's decisions, without I/O."""

from __future__ import annotations

import uuid

import pytest

from txoutbox.publishers import OutgoingMessage
from txoutbox.relay.circuit import Circuit, CircuitState
from txoutbox.relay.engine import pack_batches
from txoutbox.relay.retry import DeadLetter, RetryLater, RetryPolicy
from txoutbox.relay.store import ClaimedRow


def test_permanent_failure_is_dead_lettered_at_once() -> None:
    assert RetryPolicy().decide(0, "MessageTooLong: big", permanent=True) == DeadLetter("MessageTooLong: big")


def test_transient_failures_back_off_exponentially_with_full_jitter_then_dead_letter() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=1, cap_seconds=5)
    assert [policy.backoff(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    delays = [policy.decide(2, "x", permanent=False) for _ in range(500)]
    assert all(isinstance(d, RetryLater) and 0 <= d.delay_seconds <= 4 for d in delays)
    spread = [d.delay_seconds for d in delays if isinstance(d, RetryLater)]
    assert min(spread) < 1 and max(spread) > 3  # full jitter spreads over the whole range
    assert policy.decide(4, "boom", permanent=False) == DeadLetter(
        "gave up after 5 attempts; last error: boom"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_once_probes_with_capped_backoff_and_closes() -> None:
    clock = FakeClock()
    circuit = Circuit(base_seconds=1, cap_seconds=8, _clock=clock)
    assert circuit.fail("AccessDenied") is True
    assert circuit.fail("AccessDenied") is False  # already open: no second "opened"
    assert not circuit.try_probe()
    waits = []
    for _ in range(6):
        waits.append(circuit.seconds_to_probe())
        clock.now += circuit.seconds_to_probe()
        assert circuit.try_probe() and circuit.state is CircuitState.HALF_OPEN
        assert not circuit.try_probe()  # one prober at a time
        circuit.fail("AccessDenied")
    assert all(w <= 8 for w in waits) and waits[-1] >= 4  # grows, capped at 8 (jitter: half to whole)
    clock.now += 3
    assert circuit.succeed() == pytest.approx(clock.now - 100.0)
    assert circuit.closed and circuit.reason is None
    assert circuit.succeed() is None


def _row(n: int, size: int) -> ClaimedRow:
    import datetime as dt

    message = OutgoingMessage(n, uuid.uuid4(), "T", str(n), "E", b"x" * size)
    return ClaimedRow(n, 0, dt.datetime.now(dt.UTC), message)


def test_batches_respect_entry_and_byte_limits() -> None:
    rows = [_row(n, 100) for n in range(23)]
    assert [len(b) for b in pack_batches(rows, 10, 1_000_000)] == [10, 10, 3]
    big = [_row(n, 100_000) for n in range(5)]
    batches = pack_batches(big, 10, 262_144)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert all(sum(r.message.size for r in b) <= 262_144 for b in batches)
    assert [r.row_id for b in batches for r in b] == list(range(5))


def test_circuit_state_changes_only_through_its_methods() -> None:
    clock = FakeClock()
    circuit = Circuit(base_seconds=1, cap_seconds=8, _clock=clock)
    with pytest.raises(AttributeError):
        circuit.state = CircuitState.OPEN  # type: ignore[misc]
    circuit.fail("down")
    clock.now += circuit.seconds_to_probe()
    assert circuit.try_probe()
    circuit.abandon_probe()  # the database failed before the probe was made: open, due again at once
    assert circuit.state is CircuitState.OPEN and circuit.failures == 1 and circuit.try_probe()

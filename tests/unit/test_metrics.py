"""The relay's metrics: bulk observation records what one observe per amount would."""

from __future__ import annotations

from prometheus_client import generate_latest

from txoutbox.metrics import RelayMetrics, observe_many


def test_observe_many_records_the_same_buckets_count_and_sum_as_observe() -> None:
    # Amounts on the bounds, between them, below the first and past the last (the +Inf bucket).
    amounts = [0.0, 0.001, 0.0011, 0.003, 0.01, 0.2, 0.25, 1.0, 7.0, 59.9, 60.0, 299.0, 300.0, 301.0, 5000.0]
    one_by_one, bulk = RelayMetrics(), RelayMetrics()
    for amount in amounts:
        one_by_one.delivery_latency.observe(amount)
    observe_many(bulk.delivery_latency, amounts[:7])
    observe_many(bulk.delivery_latency, amounts[7:])
    observe_many(bulk.delivery_latency, [])

    def samples(metrics: RelayMetrics) -> list[str]:
        text = generate_latest(metrics.registry).decode()
        return [
            line
            for line in text.splitlines()
            if line.startswith("txoutbox_publish_latency_seconds") and "_created" not in line
        ]

    expected = samples(one_by_one)
    assert any('le="+Inf"} 15.0' in line for line in expected)
    assert samples(bulk) == expected

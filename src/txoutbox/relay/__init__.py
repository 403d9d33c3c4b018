"""The relay: moves committed outbox events to the broker, at least once, in order per aggregate.

- `engine`: the worker loops, lanes and rounds (`Relay`);
- `store`: every SQL statement the relay runs (`RelayStore`);
- `circuit`, `retry`: what happens on broker-wide and per-event failures;
- `heartbeat`, `alerts`, `listener`: the side jobs.
"""

from txoutbox.relay.engine import Relay

__all__ = ["Relay"]

"""The fault ledger (`make chaos`, `python -m chaos`): the whole system in real processes, under load and a
seeded random fault schedule, checked against a ledger of every handled event.

- `stack`: the embedded PostgreSQL and fauxqs, the ledger tables, the child processes.
- `writer`: a library writer process (multi-event aggregates, 1,000-event bursts, payloads near and over
  256 KiB), recording what it commits in the same transaction as the events.
- `ledger_consumer`: `txoutbox.consumer.Consumer` with a handler that writes a ledger row per event in the
  handler's transaction.
- `faults`: the schedule (SIGKILL, SIGSTOP/SIGCONT, SQS deny/down, a PostgreSQL restart, a pinned xmin
  horizon, a relay whose lease is shorter than a publish round) and its execution.
- `ledger`: what the ledger says: committed, lost, handled twice, order violations, stuck, dead letters.
"""

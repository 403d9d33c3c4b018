"""The database's own ceiling: the booking transaction as raw SQL from pgbench, no HTTP, no ORM.

The script is the transaction the booking API runs (flights.routes.book_flight + txoutbox.add_event_async),
statement for statement: BEGIN; INSERT the flight RETURNING its id; the writer's one statement
(txoutbox.queries.INSERT_EVENT_NEW_AGGREGATE_AND_NOTIFY: the outbox row, the wake-up; the flight is
new, so no aggregate lock); COMMIT.
Prepared statements (`-M prepared`), like psycopg after its fifth execution. The variants measure, on the
same clients, the flight insert alone (the outbox tax's basis), the booking without any wake-up and with
a NOTIFY at every commit (the trade-off of the wake-up design).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.infra import ARRIVAL, ARRIVAL_AT, DEPARTURE, DEPARTURE_AT, socket_dir
from txoutbox import queries

_FLIGHT = f"""\\set n random(1, 1000000000)
BEGIN;
INSERT INTO public.flights (departure_airport, arrival_airport, departure_date_time, arrival_date_time)
  VALUES ('{DEPARTURE}', '{ARRIVAL}', '{DEPARTURE_AT}', '{ARRIVAL_AT}')
  RETURNING id AS flight_id, departure_airport, arrival_airport, departure_date_time, arrival_date_time \\gset
{{event}}COMMIT;
"""

# The booking's payload as the API's writer serialises it (a 7-digit flight id), for its stated size.
_PAYLOAD_BYTES = len(
    json.dumps(
        {
            "id": 1_000_000,
            "departureAirport": DEPARTURE,
            "arrivalAirport": ARRIVAL,
            "departureDateTime": DEPARTURE_AT,
            "arrivalDateTime": ARRIVAL_AT,
        },
        separators=(",", ":"),
    ).encode()
)

_PAYLOAD = (
    "jsonb_build_object('id', (:flight_id)::bigint, "
    f"'departureAirport', '{DEPARTURE}', 'arrivalAirport', '{ARRIVAL}', "
    f"'departureDateTime', '{DEPARTURE_AT}', 'arrivalDateTime', '{ARRIVAL_AT}')"
)

# The writer's own statements (txoutbox.writer): array parameters spelled as one-element arrays, and the
# one-event statement's plain parameters.
_PARAMS = {
    "event_id": "uuidv7()",
    "aggregate_type": "'Flight'",
    "aggregate_id": "(:flight_id)::bigint::text",
    "event_type": "'FlightBooked'",
    "payload": _PAYLOAD,
    "payload_size": str(_PAYLOAD_BYTES),
    "event_ids": "ARRAY[uuidv7()]",  # time-ordered, as txoutbox.ids.uuid7 makes them (PostgreSQL 18)
    "aggregate_types": "ARRAY['Flight']",
    "aggregate_ids": "ARRAY[(:flight_id)::bigint::text]",
    "event_types": "ARRAY['FlightBooked']",
    "traceparent": "NULL",  # no trace context (txoutbox.tracing)
    "tracestate": "NULL",
    "payloads": f"ARRAY[{_PAYLOAD}]",
    # The writer states the size of the JSON it sends (a number, as txoutbox.writer passes it).
    "payload_bytes": f"ARRAY[{_PAYLOAD_BYTES}]",
}

# name -> the writer's statements in the transaction (none: the flight insert alone)
VARIANTS: dict[str, list[str]] = {
    "flight_only": [],
    # What the API's add_event(notify=True, new_aggregate=True) runs: the product's wake-up, and no
    # aggregate lock (the flight is new in the same transaction).
    "booking": [queries.INSERT_EVENT_NEW_AGGREGATE_AND_NOTIFY],
    "booking_no_wakeup": [queries.INSERT_EVENT_NEW_AGGREGATE],  # notify=False
    # The earlier wake-up, for the trade-off: a NOTIFY at every commit, whether a relay waits or not.
    "booking_notify_always": [
        queries.INSERT_EVENT_NEW_AGGREGATE.replace(
            "SELECT count(*) FROM ins",
            f"SELECT n, pg_notify('{queries.NOTIFY_CHANNEL}', '') FROM (SELECT count(*) AS n FROM ins) AS c",
        ),
    ],
}


def script(variant: str) -> str:
    statements = []
    for sql in VARIANTS[variant]:
        for name, value in _PARAMS.items():
            sql = sql.replace(f"%({name})s", value)
        if "%(" in sql:
            raise RuntimeError(f"pgbench script: unknown parameter in {sql!r}")
        statements.append(sql.strip() + ";\n")
    return _FLIGHT.replace("{event}", "".join(statements))


@dataclass
class PgbenchResult:
    tps: float
    latency_ms: float
    transactions: int
    failed: int


_TPS = re.compile(r"^tps = ([\d.]+)", re.M)
_LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)
_TX = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


def pgbench_command(
    bin_path: Path,
    database_url: str,
    script_path: Path,
    *,
    clients: int,
    threads: int,
    seconds: int,
    rate: float | None = None,
) -> list[str]:
    """pgbench running `script_path` with prepared statements (like psycopg after its fifth execution);
    `rate`: that many transactions per second on a schedule (`-R`), else as fast as it goes."""
    database = database_url.split("?", 1)[0].rsplit("/", 1)[1]
    paced = ["-R", f"{rate:.0f}"] if rate is not None else []
    return [
        str(bin_path / "pgbench"),
        "-n",  # no vacuum of pgbench's own tables (we have none)
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(threads),
        *paced,
        "-T",
        str(seconds),
        "-f",
        str(script_path),
        "-h",
        socket_dir(database_url),
        "-U",
        "postgres",
        database,
    ]


def run_pgbench(
    bin_path: Path,
    database_url: str,
    workdir: Path,
    *,
    variant: str,
    clients: int = 4,
    seconds: int = 10,
) -> PgbenchResult:
    path = workdir / f"{variant}.sql"
    path.write_text(script(variant))
    proc = subprocess.run(
        pgbench_command(
            bin_path, database_url, path, clients=clients, threads=min(clients, 2), seconds=seconds
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    tps = _TPS.search(out)
    if proc.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {out[-2000:]}")
    lat = _LAT.search(out)
    tx = _TX.search(out)
    failed = _FAILED.search(out)
    return PgbenchResult(
        tps=float(tps.group(1)),
        latency_ms=float(lat.group(1)) if lat else float("nan"),
        transactions=int(tx.group(1)) if tx else 0,
        failed=int(failed.group(1)) if failed else 0,
    )

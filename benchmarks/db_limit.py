"""The database's own ceiling: the booking transaction as raw SQL from pgbench, no HTTP, no ORM.

The script is the transaction the booking API runs (flights.app.book_flight + txoutbox.add_event_async),
statement for statement: BEGIN; INSERT the flight RETURNING its id; INSERT the outbox row behind the
aggregate's advisory lock, with the pg_notify folded into the same statement as txoutbox.writer does;
COMMIT. Prepared statements (`-M prepared`), like psycopg after its fifth execution.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.infra import ARRIVAL, ARRIVAL_AT, DEPARTURE, DEPARTURE_AT, socket_dir
from txoutbox.queries import ADVISORY_LOCK_BUCKETS, ADVISORY_LOCK_CLASS, NOTIFY_CHANNEL

_SCRIPT = f"""\\set n random(1, 1000000000)
BEGIN;
INSERT INTO public.flights (departure_airport, arrival_airport, departure_date_time, arrival_date_time)
  VALUES ('{DEPARTURE}', '{ARRIVAL}', '{DEPARTURE_AT}', '{ARRIVAL_AT}')
  RETURNING id AS flight_id, departure_airport, arrival_airport, departure_date_time, arrival_date_time \\gset
WITH ordered AS (
  SELECT pg_advisory_xact_lock(
    {ADVISORY_LOCK_CLASS}, hashtext('Flight:' || (:flight_id)::bigint::text) & {ADVISORY_LOCK_BUCKETS - 1}
  ) AS locked
), ins AS (
  INSERT INTO txoutbox.outbox (event_id, aggregate_type, aggregate_id, event_type, payload)
  SELECT gen_random_uuid(), 'Flight', (:flight_id)::bigint::text, 'FlightBooked',
         jsonb_build_object('id', (:flight_id)::bigint,
                            'departureAirport', '{DEPARTURE}', 'arrivalAirport', '{ARRIVAL}',
                            'departureDateTime', '{DEPARTURE_AT}', 'arrivalDateTime', '{ARRIVAL_AT}')
  FROM ordered
  RETURNING 1
)
SELECT n{{notify}} FROM (SELECT count(*) AS n FROM ins) AS c;
COMMIT;
"""


def script(notify: bool) -> str:
    return _SCRIPT.replace("{notify}", f", pg_notify('{NOTIFY_CHANNEL}', '')" if notify else "")


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


def run_pgbench(
    bin_path: Path,
    database_url: str,
    workdir: Path,
    *,
    notify: bool,
    clients: int = 4,
    seconds: int = 10,
) -> PgbenchResult:
    path = workdir / f"booking{'_notify' if notify else ''}.sql"
    path.write_text(script(notify))
    database = database_url.split("?", 1)[0].rsplit("/", 1)[1]
    proc = subprocess.run(
        [
            str(bin_path / "pgbench"),
            "-n",  # no vacuum of pgbench's own tables (we have none)
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(seconds),
            "-f",
            str(path),
            "-h",
            socket_dir(database_url),
            "-U",
            "postgres",
            database,
        ],
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

"""Every SQL statement the booking service runs, by name (psycopg `%(name)s` placeholders)."""

from __future__ import annotations

from typing import Any

import psycopg

# One round trip: the row goes in and comes back with its id, as stored.
INSERT_FLIGHT = """
INSERT INTO public.flights (departure_airport, arrival_airport, departure_date_time, arrival_date_time)
VALUES (%(departure_airport)s, %(arrival_airport)s, %(departure_date_time)s, %(arrival_date_time)s)
RETURNING id, departure_airport, arrival_airport, departure_date_time, arrival_date_time
"""

LIST_FLIGHTS = """
SELECT id, departure_airport, arrival_airport, departure_date_time, arrival_date_time
FROM public.flights
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s
"""

GET_FLIGHT = """
SELECT id, departure_airport, arrival_airport, departure_date_time, arrival_date_time
FROM public.flights
WHERE id = %(id)s
"""

# `txoutbox flights list`: the table as an operator reads it.
TABLE_FLIGHTS = """
SELECT id, departure_airport, arrival_airport, departure_date_time, arrival_date_time, created_at
FROM public.flights ORDER BY id LIMIT %(limit)s
"""


def list_for_operator(conn: psycopg.Connection[Any], limit: int) -> list[Any]:
    """`txoutbox flights list`: the booked flights, oldest first, with when they were stored."""
    return conn.execute(TABLE_FLIGHTS, {"limit": limit}).fetchall()

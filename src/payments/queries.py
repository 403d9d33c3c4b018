"""The payment service's SQL, by name, and the operator's read of it."""

from __future__ import annotations

from typing import Any

import psycopg

INSERT_PAYMENTS = """
INSERT INTO public.payments (event_id, flight_id)
SELECT * FROM unnest(CAST(%(event_ids)s AS uuid[]), CAST(%(flight_ids)s AS bigint[]))
"""

LIST_PAYMENTS = """
SELECT id, event_id, flight_id, status, processed_at FROM public.payments ORDER BY id LIMIT %(limit)s
"""


def list_payments(conn: psycopg.Connection[Any], limit: int) -> list[Any]:
    """`txoutbox payments list`: the payments made, oldest first."""
    return conn.execute(LIST_PAYMENTS, {"limit": limit}).fetchall()

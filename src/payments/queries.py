"""The payment service's SQL."""

INSERT_PAYMENTS = """
INSERT INTO public.payments (event_id, flight_id)
SELECT * FROM unnest(CAST(%(event_ids)s AS uuid[]), CAST(%(flight_ids)s AS bigint[]))
"""

LIST_PAYMENTS = """
SELECT id, event_id, flight_id, status, processed_at FROM public.payments ORDER BY id LIMIT %(limit)s
"""

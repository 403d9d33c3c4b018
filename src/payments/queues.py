"""The reference system's queues, named once for everything that creates or reads them.

`devstack` creates them locally, `infra/` on AWS, the payment service reads them. This module imports
nothing, so the CDK app can use it without the service's runtime dependencies.
"""

from __future__ import annotations

QUEUE_NAME = "flightQueue.fifo"  # FlightBooked events, published by the relay
DLQ_NAME = "flightDLQ.fifo"  # where SQS moves a message after MAX_RECEIVE_COUNT failed receives
MAX_RECEIVE_COUNT = 10

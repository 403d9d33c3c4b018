"""Real infrastructure for the tests: one embedded PostgreSQL and one fauxqs per xdist worker.

Every test gets its own database, copied from a migrated template (a file copy: milliseconds), and its own
pair of FIFO queues, so tests never see each other's rows or messages.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.postgres import LocalPostgres
from devstack.sqs import FauxqsProcess, Queues, ensure_queues, free_port, sqs_client
from txoutbox.config import DEFAULT_REGION, RelaySettings, Settings
from txoutbox.migrate import apply_migrations, resolve_components

TEMPLATE = "txoutbox_template"
REGION = DEFAULT_REGION


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    data_dir = Path(tempfile.mkdtemp(prefix="txo-pg-"))
    pg = LocalPostgres(data_dir).start()
    url = pg.ensure_database(TEMPLATE)
    apply_migrations(url, resolve_components(None))
    yield pg
    pg.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def txoutbox_server_url(postgres: LocalPostgres) -> str:
    """The test kit's fixtures (txoutbox.testing: txoutbox_database_url, ...) on this embedded PostgreSQL."""
    return postgres.admin_url


@pytest.fixture
def database_url(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh, fully migrated database for this test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = postgres.ensure_database(name, template=TEMPLATE)
    yield url
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def fauxqs() -> Iterator[FauxqsProcess]:
    proc = FauxqsProcess(free_port()).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def sqs(fauxqs: FauxqsProcess) -> Any:
    return sqs_client(fauxqs.endpoint_url, REGION)


@pytest.fixture
def queues(sqs: Any) -> Queues:
    """A FIFO queue with its DLQ, new for this test."""
    suffix = uuid.uuid4().hex[:12]
    return ensure_queues(sqs, f"q{suffix}.fifo", f"d{suffix}.fifo")


@pytest.fixture
def settings(database_url: str, queues: Queues, fauxqs: FauxqsProcess) -> Settings:
    return Settings(
        database_url=database_url,
        sqs_queue_url=queues.queue_url,
        sqs_dlq_url=queues.dlq_url,
        sqs_endpoint_url=fauxqs.endpoint_url,
        aws_region=REGION,
        local_stack=True,
        fault_url=fauxqs.fault_url,
        relay=replace(
            RelaySettings(),
            poll_interval=0.2,
            retry_base_seconds=0.05,
            retry_cap_seconds=0.5,
            probe_base_seconds=0.1,
            probe_cap_seconds=0.5,
            shutdown_timeout=5,
        ),
    )


@pytest.fixture
def receive_all(sqs: Any) -> Any:
    """Drain a queue: every message body received within `timeout`, deleting as it goes."""

    def receive(queue_url: str, expected: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        import time

        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            got = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(got)
            if got:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
                )
        return messages

    return receive


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

"""Leases of the rows in hand: renewed while they are published, and a deadline the engine respects.

A claim leases its rows for `lease_seconds`. A long claim (an aggregate with hundreds of events goes out
one round per event) can outlive that, after which another relay may claim and publish the same events
again. So while rows are in hand their leases are renewed every third of a lease, and the engine sends a
round only while at least half a lease is left by its own clock (counted from before the claim or the
last renewal statement was sent, so never longer than the database's). Rows another relay took over are
dropped, with the rest of their aggregate's lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection

from txoutbox.connections import DB_ERRORS
from txoutbox.relay.store import RelayStore

log = logging.getLogger("txoutbox.relay")


class Lease:
    """The lease on one claim's rows."""

    def __init__(self, store: RelayStore, ids: Collection[int], started_at: float, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.held = set(ids)
        self.lost: set[int] = set()
        self.expires_at = started_at + seconds  # monotonic

    def safe_to_send(self) -> bool:
        """At least half a lease left: a round sent now ends well before another relay may claim."""
        return time.monotonic() + self.seconds / 2 <= self.expires_at

    def done_with(self, ids: Collection[int]) -> None:
        """These rows are no longer in hand (published or refused): stop renewing them."""
        self.held.difference_update(ids)

    async def renew(self) -> None:
        if not self.held:
            return
        started = time.monotonic()
        ids = list(self.held)
        kept = await self.store.renew(ids)
        self.expires_at = started + self.seconds
        lost = set(ids) - kept
        if lost:
            self.held -= lost
            self.lost |= lost
            log.warning("lost the lease of %d events to another relay; leaving them to it", len(lost))

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await self.renew()
            except DB_ERRORS as exc:
                self.store.failed(exc)  # the deadline stops the sends if this lasts

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[Lease]:
        """Renew in the background for the duration of the block."""
        task = asyncio.create_task(self._keep(), name="lease")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

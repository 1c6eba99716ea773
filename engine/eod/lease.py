"""One day-end runner per shard: a session-level advisory lock on the shard database,
held by a connection of the runner's own for as long as it works there.

A runner that dies loses its connection and with it the lock, at once; no lease
expiry to wait for, no clock to trust. A second runner finds the lock taken and
leaves the shard alone (`ShardBusy`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from engine.runtime.priority import lower_backend
from engine.stores.outbox import LANE_SETTING

# Any constant shared by every runner ("eod" in ASCII); migrations use another.
EOD_LOCK_KEY = 0x656F64


class ShardBusy(RuntimeError):
    """Another runner holds this shard's day-end lease."""


@contextlib.asynccontextmanager
async def shard_lease(
    dsn: str, application_name: str, nice: int = 0
) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the shard's lease; the lock goes with the connection. Its
    backend runs at `nice` where that can be set (engine.runtime.priority)."""
    conn = await asyncpg.connect(
        dsn,
        timeout=10,
        server_settings={
            "application_name": application_name,
            # A row held by a stuck request must not stall the day-end: the chunk waits
            # this long, is rolled back and done again (engine.eod.runner).
            "lock_timeout": "5s",
            "statement_timeout": "120s",
            # Its outbox rows (the day's debits, reminders) go to the batch relay.
            LANE_SETTING: "batch",
        },
    )
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", EOD_LOCK_KEY):
            raise ShardBusy("another day-end runner is at work on this shard")
        await lower_backend(conn, nice)
        yield conn
    finally:
        await conn.close()  # releases the lock

"""The shards' durable nonces (`request_nonce`, ledger migration of issue 21), kept only
as long as they can matter.

A signed request is accepted within ±300 s of its X-Timestamp, so its nonce can come
back at most 600 s after it was first seen; `security.nonce_retention_s` (900 s) keeps
a margin over that, then the relay deletes them, every `nonce_sweep_s`, shard by shard,
`nonce_sweep_batch` rows per statement and at most `SWEEP_BATCHES_MAX` statements per
shard and sweep: a table of a few minutes of money requests, whatever the load, and
no long statement. Several relays may sweep at once; a row is deleted once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Final

import asyncpg

from engine.stores.shards import acquire
from sharding.pools import ShardPools

log = logging.getLogger(__name__)

SWEEP_BATCHES_MAX: Final = 20
_DELETE_SQL: Final = """
    DELETE FROM request_nonce r
    USING (SELECT channel_id, nonce FROM request_nonce WHERE seen_at < $1
           ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED) old
    WHERE r.channel_id = old.channel_id AND r.nonce = old.nonce"""


async def sweep(conn: asyncpg.Connection, *, retention_s: int, batch: int) -> int:
    """Delete the shard's nonces older than `retention_s`; returns how many."""
    deleted = 0
    for _ in range(SWEEP_BATCHES_MAX):
        before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=retention_s)
        status = await conn.execute(_DELETE_SQL, before, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            break
    return deleted


async def sweep_forever(
    pools: ShardPools, *, retention_s: int, interval_s: float, batch: int
) -> None:
    while True:
        for name in pools.by_name:
            try:
                async with acquire(pools.pool(name)) as conn:
                    await sweep(conn, retention_s=retention_s, batch=batch)
            except Exception as exc:  # a down shard is swept next time
                log.warning(
                    "nonce sweep failed", extra={"shard": name, "error": type(exc).__name__}
                )
        await asyncio.sleep(interval_s)

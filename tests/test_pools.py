"""Shard pools keep their session settings across releases; postings spread over stripes."""

from __future__ import annotations

import collections
import datetime as dt

from engine.settings import Settings
from ledger.chart import INTERNAL_STRIPES, Code
from ledger.postings import Leg, Posting
from sharding.ids import IdGenerator
from sharding.pools import ShardPools


async def test_time_zone_survives_release(settings: Settings) -> None:
    pools = ShardPools(settings.shard_map(), settings.pool, "test-pools")
    await pools.open()
    try:
        pool = pools.pool("shard_0")
        for _ in range(3):  # the same connections, acquired again after a release
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW timezone") == "Asia/Shanghai"
                await conn.execute("SELECT 1")
    finally:
        await pools.close()


def test_postings_spread_over_all_stripes() -> None:
    ids = IdGenerator(5, lambda: True)
    legs = (Leg(Code.LOAN_PRINCIPAL, 1, 1), Leg(Code.CORE_SETTLEMENT, None, -1))
    day = dt.date(2026, 11, 23)
    counts = collections.Counter(
        Posting(ids.next_id(7), 1, "t", None, day, legs).stripe()
        for _ in range(INTERNAL_STRIPES * 100)
    )
    assert set(counts) == set(range(INTERNAL_STRIPES))
    assert max(counts.values()) < 2 * min(counts.values())

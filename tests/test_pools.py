"""Shard pools keep their session settings across releases and name a server gone as
the shard unavailable; postings spread over stripes."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt

import asyncpg
import pytest

from engine.settings import Settings
from engine.stores.shards import read, shard_connection
from ledger.chart import INTERNAL_STRIPES, Code
from ledger.postings import Leg, Posting
from sharding.ids import IdGenerator
from sharding.pools import ShardPools, ShardUnavailableError
from sharding.shard_map import PhysicalShard, ShardMap

SSL_REQUEST = 80877103  # the protocol's code for "may we speak TLS?"


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


async def _answer_startup_with_57p01(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """What a backend forked just before its postmaster was killed sent to the engine in
    the shard battery: the startup answered with FATAL 57P01, then the socket closed."""
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            code = int.from_bytes((await reader.readexactly(size - 4))[:4], "big")
            if code == SSL_REQUEST:
                writer.write(b"N")  # no TLS: the client sends its startup in clear
                continue
            fields = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to unexpected postmaster exit\0\0"
            writer.write(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
            await writer.drain()
            return
    except asyncio.IncompleteReadError:
        return
    finally:
        writer.close()


async def test_a_server_shutting_down_is_the_shard_unavailable(settings: Settings) -> None:
    """A connection refused at startup with 57P01 (a shard's postmaster killed under
    load) is the shard unavailable (503 SHARD_UNAVAILABLE), not an internal error."""
    server = await asyncio.start_server(_answer_startup_with_57p01, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dying = ShardMap((PhysicalShard("dying", f"postgresql://postgres@127.0.0.1:{port}/x"),))
    pools = ShardPools(dying, settings.pool, "test-pools")
    await pools.open()
    try:
        with pytest.raises(ShardUnavailableError) as raised:
            async with shard_connection(pools, 0):
                pass
        assert isinstance(raised.value.__cause__, asyncpg.AdminShutdownError)
        with pytest.raises(ShardUnavailableError):
            await read(pools, 0, lambda c: c.fetchval("SELECT 1"))
    finally:
        await pools.close()
        server.close()
        await server.wait_closed()

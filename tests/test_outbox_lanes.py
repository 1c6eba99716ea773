"""Ledger 0025: outbox rows in lanes. A row's lane is its writer's session's
`engine.outbox_lane`; each relay claims only its lanes. On a throw-away database with
the shard migrations, so no running relay takes the rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.migrate import SHARD_MIGRATIONS
from engine.stores import outbox
from sharding.migrations import apply_migrations, load_migrations


@pytest.fixture
async def shard_db(scratch_db: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, load_migrations(SHARD_MIGRATIONS))
    finally:
        await conn.close()
    yield scratch_db


async def _write(dsn: str, first_id: int, n: int, lane: str | None) -> None:
    settings = {outbox.LANE_SETTING: lane} if lane else {}
    conn = await asyncpg.connect(dsn, server_settings=settings)
    try:
        async with conn.transaction():
            for i in range(first_id, first_id + n):
                await outbox.enqueue(conn, outbox_id=i, customer_id=7, kind="sms", ref_id=i)
            # Rows written by SQL of the session (as in open_repayments) follow it too.
            await conn.execute(
                "INSERT INTO outbox (outbox_id, customer_id, kind, ref_id) VALUES ($1, 7, 'sms', 0)",
                first_id + n,
            )
    finally:
        await conn.close()


async def test_a_row_takes_its_sessions_lane(shard_db: str) -> None:
    await _write(shard_db, 100, 3, None)
    await _write(shard_db, 200, 3, "batch")
    conn = await asyncpg.connect(shard_db)
    try:
        lanes = dict(await conn.fetch("SELECT outbox_id, lane FROM outbox"))
        assert lanes == {i: "online" for i in range(100, 104)} | {
            i: "batch" for i in range(200, 204)
        }
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, lane) "
                "VALUES (1, 7, 'sms', 0, 'nightly')"
            )
    finally:
        await conn.close()


async def test_each_relay_claims_only_its_lanes(shard_db: str) -> None:
    await _write(shard_db, 100, 3, None)
    await _write(shard_db, 200, 3, "batch")
    conn = await asyncpg.connect(shard_db)
    try:
        online = await outbox.claim(conn, 50, 30.0, ("online",))
        assert sorted(r.outbox_id for r in online) == [100, 101, 102, 103]
        assert await outbox.claim(conn, 50, 30.0, ("online",)) == []  # leased now
        batch = await outbox.claim(conn, 2, 30.0, ("batch",))  # bounded by its batch
        assert sorted(r.outbox_id for r in batch) == [200, 201]
        rest = await outbox.claim(conn, 50, 30.0)  # both lanes: `engine relay` alone
        assert sorted(r.outbox_id for r in rest) == [202, 203]
        # The claim can read its lane from the ready index, not the whole outbox (a
        # table this small would be read whole anyway: the planner is told not to).
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT outbox_id FROM outbox "
            "WHERE done_at IS NULL AND lane = 'batch' ORDER BY next_attempt_at LIMIT 5"
        )
        assert "outbox_ready" in str(plan)
    finally:
        await conn.close()

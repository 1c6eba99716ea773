"""The outbox row's life on a real shard: a claim rewrites the row in place (a HOT
update: no new index entries), only a final answer sets `done_at`, and the database
refuses a row whose `done_at` disagrees with its state (the ready index relies on it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.settings import Settings
from engine.stores import outbox
from tests.ledger_helpers import fresh_id


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection of this test's own: other tests stop and start shard servers."""
    connection = await asyncpg.connect(settings.shards[0].dsn, timeout=10)
    yield connection
    await connection.close()


async def _hot_updates(conn: asyncpg.Connection) -> int:
    """HOT updates of the outbox by the current transaction, so far."""
    return int(
        await conn.fetchval("SELECT pg_stat_get_xact_tuples_hot_updated('outbox'::regclass)")
    )


async def test_a_claim_is_a_hot_update_and_only_the_answer_sets_done_at(
    conn: asyncpg.Connection,
) -> None:
    outbox_id, ref_id = fresh_id(), fresh_id()
    tx = conn.transaction()
    await tx.start()
    try:  # rolled back at the end: the session's relay never sees the row
        await outbox.enqueue(
            conn, outbox_id=outbox_id, customer_id=1, kind="sms", ref_id=ref_id, payload={}
        )
        # Due before anything else, so the relay's claim of one row takes this one.
        await conn.execute(
            "UPDATE outbox SET next_attempt_at = '2000-01-01' WHERE outbox_id = $1", outbox_id
        )
        before = await _hot_updates(conn)
        [claimed] = await outbox.claim(conn, batch_max=1, lease_s=30)
        assert claimed.outbox_id == outbox_id and claimed.attempts == 1
        assert await _hot_updates(conn) == before + 1
        assert (
            await conn.fetchval("SELECT done_at FROM outbox WHERE outbox_id = $1", outbox_id)
            is None
        )
        await outbox.finish(conn, claimed, "done", "sent")
        row = await conn.fetchrow(
            "SELECT state, done_at FROM outbox WHERE outbox_id = $1", outbox_id
        )
        assert row is not None and row["state"] == "done" and row["done_at"] is not None
    finally:
        await tx.rollback()


@pytest.mark.parametrize(
    ("state", "done_at"), [("done", "NULL"), ("failed", "NULL"), ("pending", "now()")]
)
async def test_done_at_must_match_the_state(
    conn: asyncpg.Connection, state: str, done_at: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="outbox_done_at_when_final"):
        await conn.execute(
            f"""INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, state, done_at)
                VALUES ($1, 1, 'sms', $2, $3, {done_at})""",
            fresh_id(),
            fresh_id(),
            state,
        )

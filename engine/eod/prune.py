"""Step `prune`: outbox rows finished (done or failed) more than `outbox_retention_days`
before the day are deleted, a chunk at a time. What they carried out is recorded where
it belongs (the loan, the repayment, the ledger, the SMS gateway's own log); the outbox
is a queue, not a history."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg

from engine.eod import keys, progress
from engine.eod.context import EodContext
from engine.eod.days import SHANGHAI

STEP = "prune"
OLD_SQL = """SELECT outbox_id FROM outbox
             WHERE done_at < $1 AND outbox_id > $2 ORDER BY outbox_id LIMIT $3"""


def horizon(ctx: EodContext, day: dt.date) -> dt.datetime:
    """Rows finished before this moment go: the start of (day − retention), Shanghai time."""
    first_kept = day - dt.timedelta(days=ctx.settings.outbox_retention_days)
    return dt.datetime.combine(first_kept, dt.time(0), SHANGHAI)


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, OLD_SQL, (horizon(ctx, day),), after, ctx.settings.prune_chunk)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, outbox_ids: list[int]
) -> int:
    async with conn.transaction():
        status = await conn.execute(
            "DELETE FROM outbox WHERE outbox_id = ANY($1::bigint[]) AND done_at < $2",
            outbox_ids,
            horizon(ctx, day),
        )
        deleted = int(status.split()[-1])
        await progress.advance(conn, day, STEP, start=after, last=outbox_ids[-1], rows=deleted)
    return deleted

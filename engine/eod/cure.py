"""Step `cure`: loans recorded late that are late no more (paid up or settled since):
DPD 0, class back to normal (the change recorded), their collection case closed.
Their lines stay frozen until an operator lifts the freeze; a customer with no late
loan left loses the waiver an operator's earlier lift gave (`collection.end_waivers`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg

from engine.eod import collection, keys, progress, risk
from engine.eod.context import EodContext

STEP = "cure"


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, risk.CURE_SQL, (day,), after, ctx.settings.overdue_chunk)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, loan_ids: list[int]
) -> int:
    async with conn.transaction():
        cured = await risk.cure(conn, day, loan_ids)
        await collection.close_cases(conn, day, [loan_id for loan_id, _ in cured])
        await collection.end_waivers(conn, [customer_id for _, customer_id in cured])
        await progress.advance(conn, day, STEP, start=after, last=loan_ids[-1], rows=len(cured))
    return len(cured)

"""Step `accrual`: regular interest accrued through the day, into the accrual sub-ledger.

Each chunk is one call of the shard's `eod_accrue_chunk` (ledger migrations 0013,
0023) over a range of loan ids: per `disbursed` loan, today's accrual figure (`ledger.accrual`,
computed by the database's twin of it) minus what it has accrued so far, added to the
loan's `loan_accrual` row (the sub-ledger), and the chunk's sum in one posting of two
legs: Dr accrued_interest_receivable (the control account) / Cr interest_income. It
locks the chunk's sub-ledger rows, not its loans: a repayment's completion locks
them too, after its loans.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg

from engine.eod import keys, progress
from engine.eod.context import EodContext
from ledger.chart import INTERNAL_STRIPES

STEP = "accrual"
ACCRUING_SQL = """SELECT loan_id FROM loan WHERE status = 'disbursed' AND loan_id > $1
                  ORDER BY loan_id LIMIT $2"""


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, ACCRUING_SQL, (), after, ctx.settings.accrual_chunk)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, loan_ids: list[int]
) -> int:
    """Accrue the loans after `after` through the chunk's last; returns how many."""
    interest_txn = ctx.ids.next_id(ctx.logical_shard)
    opening_txn = ctx.ids.next_id(ctx.logical_shard)
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM eod_accrue_chunk($1, $2, $3, $4, $5, $6)",
            day,
            after,
            loan_ids[-1],
            interest_txn,
            opening_txn,
            interest_txn % INTERNAL_STRIPES,
        )
        assert row is not None
        await progress.advance(conn, day, STEP, start=after, last=loan_ids[-1], rows=row["loans"])
    return int(row["loans"])

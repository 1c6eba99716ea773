"""200 concurrent postings on one loan account and one internal account lose no update."""

from __future__ import annotations

import asyncio

import asyncpg

from engine.settings import Settings
from ledger.chart import Code
from ledger.store import account_balance, post, trial_balance
from tests.ledger_helpers import fresh_id, two_leg

CONCURRENT = 200


async def test_concurrent_postings_lose_no_update(settings: Settings) -> None:
    dsn = settings.shards[1].dsn
    pool = await asyncpg.create_pool(dsn, min_size=20, max_size=40)
    try:
        loan_id, customer_id = fresh_id(), fresh_id()
        async with pool.acquire() as conn:
            clearing_before = await account_balance(conn, Code.DISBURSEMENT_CLEARING, None)

        async def one(amount_fen: int) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await post(conn, two_leg(loan_id, customer_id, amount_fen))

        amounts = [100 + n for n in range(CONCURRENT)]
        await asyncio.gather(*(one(a) for a in amounts))
        async with pool.acquire() as conn:
            loan = await account_balance(conn, Code.LOAN_PRINCIPAL, loan_id)
            clearing = await account_balance(conn, Code.DISBURSEMENT_CLEARING, None)
            legs = await conn.fetchval(
                "SELECT count(*) FROM ledger_leg WHERE code = 'loan_principal' AND owner_id = $1",
                loan_id,
            )
            deep = await trial_balance(conn, deep=True)
        assert legs == CONCURRENT
        assert loan.debit_total_fen == sum(amounts)
        assert clearing.credit_total_fen - clearing_before.credit_total_fen == sum(amounts)
        assert deep.balanced
    finally:
        await pool.close()

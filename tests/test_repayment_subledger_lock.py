"""A repayment's completion and the day-end's accrual meet on the loan's row of the
accrual sub-ledger (ledger 0023): the completion locks the row after its loans and only
then reads the receivable, so a payoff that waited for an accrual chunk zeroes what the
chunk accrued too, and the control account still equals the sub-ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.contract.messages import RepaymentCreate, RepaymentItemCreate
from engine.services.customers import BANK_CARD
from engine.services.repayments import open_repayment
from engine.settings import Settings
from engine.stores.reference import Channel
from ledger.chart import Code
from ledger.postings import Leg, Posting
from ledger.store import post
from sharding.ids import IdGenerator
from tests.isolated import TEST_WORKER, Isolated

DAY = dt.date(2026, 11, 16)
ACCRUED_MEANWHILE = 50  # what the chunk the payoff waits for accrues on its loan


@pytest.fixture
async def books(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    base = settings.control_dsn.rsplit("/", 1)[0]
    isolated = Isolated(base, tmp_path)
    await isolated.create(DAY)
    isolated.seed(8)
    try:
        yield isolated
    finally:
        await isolated.drop()


async def test_a_payoff_that_waited_for_an_accrual_chunk_zeroes_what_it_accrued(
    books: Isolated,
) -> None:
    [outcome] = await books.eod(DAY)  # every loan accrues; some are debited (left pending)
    assert outcome.closed
    today = DAY + dt.timedelta(days=1)
    dsn = books.shard_dsns[0]
    conn = await asyncpg.connect(dsn)
    holder = await asyncpg.connect(dsn)
    ids = IdGenerator(TEST_WORKER, lambda: True)
    try:
        loan = await conn.fetchrow(
            """SELECT l.loan_id, l.customer_id, l.tenant_id, c.bank_card_ciphertext
               FROM loan l JOIN customer c ON c.customer_id = l.customer_id
               JOIN loan_accrual a ON a.loan_id = l.loan_id
               WHERE l.status = 'disbursed' AND l.pending_repayment_id IS NULL
                 AND a.interest_accrued_fen > 0
               ORDER BY l.loan_id LIMIT 1"""
        )
        assert loan is not None
        card = books.cipher().decrypt(
            loan["bank_card_ciphertext"], context=BANK_CARD, row=loan["customer_id"]
        )
        body = RepaymentCreate(
            str(loan["customer_id"]), [RepaymentItemCreate(str(loan["loan_id"]), "payoff")], card
        )
        async with conn.transaction():  # phase A: the payoff opened, its debit pending
            await open_repayment(
                conn,
                ids=ids,
                cipher=books.cipher(),
                reference=await books.reference(),
                channel=Channel("eod", loan["tenant_id"], "", True),
                body=body,
                key=f"payoff-{loan['loan_id']}",
                today=today,
            )

        # An accrual chunk in flight on the loan: its row locked and written, the chunk's
        # posting made, not yet committed.
        chunk = holder.transaction()
        await chunk.start()
        await holder.execute(
            "SELECT 1 FROM loan_accrual WHERE loan_id = $1 FOR NO KEY UPDATE", loan["loan_id"]
        )
        await holder.execute(
            "UPDATE loan_accrual SET interest_accrued_fen = interest_accrued_fen + $2 "
            "WHERE loan_id = $1",
            loan["loan_id"],
            ACCRUED_MEANWHILE,
        )
        await post(
            holder,
            Posting(
                ids.next_id(0), None, "interest_accrual", None, today,
                (Leg(Code.ACCRUED_INTEREST_RECEIVABLE, None, ACCRUED_MEANWHILE),
                 Leg(Code.INTEREST_INCOME, None, -ACCRUED_MEANWHILE)),
            ),
        )  # fmt: skip
        # Core took every debit: the relay completes them (the locked path).
        settling = asyncio.create_task(books.settle_debits(succeeded=True))
        waiting = 0
        for _ in range(200):
            waiting = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                   AND datname = current_database()"""
            )
            if waiting or settling.done():
                break
            await asyncio.sleep(0.05)
        assert waiting == 1, "the payoff's completion never waited for the chunk"
        await chunk.commit()
        assert await settling > 0

        status, held = await conn.fetchrow(
            """SELECT l.status, a.interest_accrued_fen - a.interest_settled_fen
               FROM loan l JOIN loan_accrual a ON a.loan_id = l.loan_id WHERE l.loan_id = $1""",
            loan["loan_id"],
        )
    finally:
        await conn.close()
        await holder.close()
    # Read before the chunk committed, the receivable would have missed its 50 fen: the
    # settled loan would keep them in the sub-ledger, and the books would say so.
    assert (status, held) == ("settled", 0)
    assert await books.problems() == []

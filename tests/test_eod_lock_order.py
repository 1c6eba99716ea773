"""The day-end's overdue chunk and a repayment's completion take their row locks in one
order: loans, then credit lines, then ledger stripes last. A customer late on one loan
and repaying another meets both on the same line (the completion gives back principal,
the chunk freezes it) and, when their postings land on one stripe, on the same internal
account row. Locked in opposite orders they deadlock; here neither may fail."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.contract.messages import RepaymentCreate, RepaymentItemCreate
from engine.eod import overdue, progress
from engine.eod.context import EodContext
from engine.eod.governor import Governor
from engine.eod.rules import load_rules
from engine.services.customers import BANK_CARD
from engine.services.repayments import complete_repayment, open_repayment
from engine.settings import Settings
from engine.stores import outbox
from engine.stores.reference import Channel, ReferenceCache
from ledger.chart import Code
from ledger.postings import Leg, Posting
from sharding.ids import IdGenerator
from tests.isolated import TEST_WORKER, Isolated

DAY = dt.date(2026, 11, 16)
LATE = DAY + dt.timedelta(days=1)  # the installments due on DAY went unpaid
STRIPE = 7
CHUNK_WORKER = TEST_WORKER - 1
_PROBE_LEGS = (Leg(Code.CORE_SETTLEMENT, None, 1), Leg(Code.PENALTY_INCOME, None, -1))


class OnStripe(IdGenerator):
    """IDs whose postings all land on one stripe of the internal accounts: the chunk's
    penalty posting and the completion's then share the `penalty_income` row."""

    def next_id(self, logical_shard: int) -> int:
        while True:
            new = super().next_id(logical_shard)
            if Posting(new, None, "probe", None, DAY, _PROBE_LEGS).stripe() == STRIPE:
                return new


@pytest.fixture
async def books(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    base = settings.control_dsn.rsplit("/", 1)[0]
    isolated = Isolated(base, tmp_path)  # the default rules: DPD > 0 freezes the lines
    await isolated.create(DAY)
    isolated.seed(4, loans=4, due_today_every=1)  # every loan has an installment due on DAY
    try:
        yield isolated
    finally:
        await isolated.drop()


async def _lock_waiters(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND datname = current_database()"""
        )
    )


async def _until_waiting(
    conn: asyncpg.Connection, count: int, *tasks: asyncio.Task[object]
) -> None:
    for _ in range(200):
        if await _lock_waiters(conn) >= count or any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]
    assert await _lock_waiters(conn) == count


async def test_an_overdue_chunk_and_a_completion_of_one_customer_never_deadlock(
    books: Isolated,
) -> None:
    [closed] = await books.eod(DAY)  # the due loans' auto-debits are opened...
    assert closed.closed
    assert await books.settle_debits(succeeded=False) > 0  # ...and refused: late on LATE
    dsn = books.shard_dsns[0]
    conn, completing, chunking, holder = [await asyncpg.connect(dsn) for _ in range(4)]
    control = await asyncpg.create_pool(books.settings.control_dsn, min_size=1, max_size=1)
    try:
        customer = await conn.fetchrow(
            """SELECT l.customer_id, l.tenant_id, l.credit_line_id,
                      array_agg(l.loan_id ORDER BY l.loan_id) AS loans, c.bank_card_ciphertext
               FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
               JOIN customer c ON c.customer_id = l.customer_id
               WHERE l.status = 'disbursed' AND p.next_due_date < $1
                 AND l.pending_repayment_id IS NULL
               GROUP BY l.customer_id, l.tenant_id, l.credit_line_id, c.bank_card_ciphertext
               HAVING count(*) >= 2 ORDER BY l.customer_id LIMIT 1""",
            LATE,
        )
        assert customer is not None, "the seed left no customer late on two loans"
        late_loan, repaid_loan = customer["loans"][:2]
        line_id = customer["credit_line_id"]
        cache = ReferenceCache(control, books.cipher(), 60.0)
        reference = await cache.load()
        card = books.cipher().decrypt(
            customer["bank_card_ciphertext"], context=BANK_CARD, row=customer["customer_id"]
        )
        async with conn.transaction():  # phase A on LATE: the day's penalty is its to book
            opened = await open_repayment(
                conn,
                ids=IdGenerator(TEST_WORKER, lambda: True),
                cipher=books.cipher(),
                reference=reference,
                channel=Channel("eod", customer["tenant_id"], "", True),
                body=RepaymentCreate(
                    str(customer["customer_id"]),
                    [RepaymentItemCreate(str(repaid_loan), "due")],
                    card,
                ),
                key=f"lock-order-{repaid_loan}",
                today=LATE,
            )
        claimed = await outbox.claim_one(completing, int(opened.repayment_id), "debit", 60.0)
        assert claimed is not None

        # The completion is stopped just before its posting: its loan and the line held.
        await holder.execute("BEGIN")
        await holder.execute(
            "SELECT 1 FROM outbox WHERE outbox_id = $1 FOR UPDATE", claimed.outbox_id
        )

        async def complete() -> None:
            async with completing.transaction():
                await complete_repayment(
                    completing, OnStripe(TEST_WORKER, lambda: True), reference, claimed,
                    succeeded=True, outcome="SUCCEEDED",
                )  # fmt: skip

        completion = asyncio.create_task(complete())
        await _until_waiting(conn, 1, completion)

        ctx = EodContext(
            settings=books.settings.eod,
            ids=OnStripe(CHUNK_WORKER, lambda: True),
            cipher=books.cipher(),
            reference=cache,
            rules=load_rules(),
            shard="shard_0",
            logical_shard=books.settings.shard_map().logical_shards_of("shard_0")[0],
            governor=Governor(books.settings.eod, "http://127.0.0.1:9/metrics"),
        )
        await progress.begin(chunking, LATE, overdue.STEP)
        chunk = asyncio.create_task(overdue.run_chunk(chunking, ctx, LATE, 0, [late_loan]))
        await _until_waiting(conn, 2, completion, chunk)  # the chunk waits for the line

        await holder.execute("ROLLBACK")  # the completion goes on to post
        outcomes = await asyncio.gather(completion, chunk, return_exceptions=True)
        assert outcomes == [None, 1], outcomes  # no DeadlockDetectedError on either side

        status = await conn.fetchval(
            "SELECT status FROM repayment WHERE repayment_id = $1", int(opened.repayment_id)
        )
        line = await conn.fetchval(
            "SELECT status FROM credit_line WHERE credit_line_id = $1", line_id
        )
        charged = await conn.fetchval(
            """SELECT count(*) FROM ledger_leg g JOIN ledger_txn t ON t.txn_id = g.txn_id
               WHERE t.kind = 'penalty_accrual' AND t.business_date = $1
                 AND g.code = 'loan_penalty_receivable' AND g.owner_id = $2""",
            LATE,
            late_loan,
        )
    finally:
        for c in (conn, completing, chunking, holder):
            await c.close()
        await control.close()
    assert (status, line, charged) == ("succeeded", "frozen", 1)
    assert await books.problems() == []

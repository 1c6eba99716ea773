"""Accrued interest as a sub-ledger (ledger migration 0023).

- On a shard whose loans hold interest on their own accounts, each balance moves to the
  accrued-interest control account and becomes the loan's row of the sub-ledger
  (accrued - settled), the book stays balanced, and the next accrual posts only the
  chunk's two legs.
- The deep trial balance finds a sub-ledger apart from its control account.
- A chunk locks its loans' rows of the sub-ledger, not the loans: it reads a loan
  as the repayment it waited for left it, and does not wait for a request holding the
  loan; every loan has its row from its booking."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
from asyncpg.transaction import Transaction

from engine.migrate import SHARD_MIGRATIONS
from ledger.store import ensure_chart, trial_balance
from sharding.migrations import apply_migrations, load_migrations
from tests.test_loan_plan import loan_with_plan

SUBLEDGER_MIGRATION = 23


async def _with_plans(conn: asyncpg.Connection, loan_ids: tuple[int, ...]) -> None:
    for loan_id in loan_ids:
        await loan_with_plan(conn, loan_id)


async def _interest(
    conn: asyncpg.Connection, settled: str = "interest_settled_fen"
) -> dict[str, int]:
    """Per loan its sub-ledger figure (accrued - `settled`), and the control account's and
    the loans' own accounts' balances."""
    rows = await conn.fetch(
        f"SELECT loan_id, interest_accrued_fen - {settled} AS held FROM loan_accrual"
    )
    out = {f"loan {r['loan_id']}": int(r["held"]) for r in rows}
    for code in ("accrued_interest_receivable", "loan_interest_receivable"):
        out[code] = int(
            await conn.fetchval(
                "SELECT coalesce(sum(debit_total_fen - credit_total_fen), 0) FROM ledger_account "
                "WHERE code = $1",
                code,
            )
        )
    return out


async def test_loan_interest_accounts_move_to_the_control_account(
    scratch: asyncpg.Connection,
) -> None:
    migrations = load_migrations(SHARD_MIGRATIONS)
    await apply_migrations(scratch, migrations[: SUBLEDGER_MIGRATION - 1])
    async with scratch.transaction():
        await ensure_chart(scratch)
    await _with_plans(scratch, (1, 2))
    day = dt.date(2026, 3, 25)
    async with scratch.transaction():  # 0013's accrual: a leg on each loan's own account
        await scratch.execute("SELECT * FROM eod_accrue_chunk($1, 0, 1, 9001, 9002, 0)", day)
        # Loan 2 paid 300 of interest before any accrual: a credit balance, as a
        # repayment booked it (Dr core_settlement / Cr the loan's receivable).
        await scratch.execute(
            "SELECT ledger_post(9003, 2, 'repayment', NULL, $1, "
            "ARRAY['core_settlement', 'loan_interest_receivable'], ARRAY[3, 2]::bigint[], "
            "ARRAY[NULL, 2]::bigint[], ARRAY[300, -300]::bigint[])",
            day,
        )
    before = await _interest(scratch, settled="0")  # no such column before 0023
    # Loan 1: 1,200 + 800 due and 400 × 15/31 (193.55 -> 194) of installment 3.
    assert before == {"loan 1": 2_194, "accrued_interest_receivable": 0,
                      "loan_interest_receivable": 1_894}  # fmt: skip

    await apply_migrations(scratch, migrations)
    assert await _interest(scratch) == {
        "loan 1": 2_194,
        "loan 2": -300,
        "accrued_interest_receivable": 1_894,
        "loan_interest_receivable": 0,
    }
    book = await trial_balance(scratch, deep=True)
    assert book.balanced and book.subledger_agrees

    # The next day, in one posting of two legs: loan 1 one more day of installment 3
    # (400 × 16/31 = 206.45 -> 206, so 12 fen), loan 2 for the first time (2,206).
    async with scratch.transaction():
        row = await scratch.fetchrow(
            "SELECT * FROM eod_accrue_chunk($1, 0, 2, 9004, 9005, 7)", day + dt.timedelta(days=1)
        )
    assert row is not None and (row["loans"], row["interest_fen"]) == (2, 12 + 2_206)
    legs = await scratch.fetch(
        "SELECT code, owner_id, amount_fen FROM ledger_leg WHERE txn_id = 9004 ORDER BY leg_no"
    )
    assert [tuple(leg) for leg in legs] == [
        ("accrued_interest_receivable", 7, 2_218),
        ("interest_income", 7, -2_218),
    ]
    assert await _interest(scratch) == {
        "loan 1": 2_206,
        "loan 2": 1_906,
        "accrued_interest_receivable": 4_112,
        "loan_interest_receivable": 0,
    }
    book = await trial_balance(scratch, deep=True)
    assert book.balanced and book.subledger_difference_fen == 0 and book.subledger_agrees


async def test_the_deep_trial_balance_finds_a_sub_ledger_that_differs(
    scratch: asyncpg.Connection,
) -> None:
    await apply_migrations(scratch, load_migrations(SHARD_MIGRATIONS))
    async with scratch.transaction():
        await ensure_chart(scratch)
    await loan_with_plan(scratch, 1)
    await scratch.execute("UPDATE loan_accrual SET interest_accrued_fen = 5 WHERE loan_id = 1")
    book = await trial_balance(scratch, deep=True)
    assert book.balanced and book.subledger_difference_fen == -5 and not book.subledger_agrees


async def _migrated_with_one_loan(conn: asyncpg.Connection) -> None:
    await apply_migrations(conn, load_migrations(SHARD_MIGRATIONS))
    async with conn.transaction():
        await ensure_chart(conn)
    await _with_plans(conn, (1,))


async def _holding_loan(dsn: str) -> tuple[asyncpg.Connection, Transaction]:
    """A connection in a transaction that holds loan 1 (FOR UPDATE), as a repayment does."""
    holder = await asyncpg.connect(dsn)
    held = holder.transaction()
    await held.start()
    await holder.execute("SELECT 1 FROM loan WHERE loan_id = 1 FOR UPDATE")
    return holder, held


async def _accrue(conn: asyncpg.Connection) -> asyncio.Task[asyncpg.Record | None]:
    return asyncio.create_task(
        conn.fetchrow(
            "SELECT * FROM eod_accrue_chunk($1, 0, 1, 9001, 9002, 0)", dt.date(2026, 3, 25)
        )
    )


async def test_a_chunk_that_waited_for_a_repayment_reads_the_loan_as_it_left_it(
    scratch: asyncpg.Connection, scratch_db: str
) -> None:
    """A repayment's completion holds the loan and its sub-ledger row and writes the row (a
    prepayment's interest, earned at once: +100 to the loan's figure) while the chunk
    waits for the row. Read in the statement that waited, the row would be the one from
    before the wait: the loan would accrue 2,194, 100 short of its figure."""
    await _migrated_with_one_loan(scratch)
    holder, held = await _holding_loan(scratch_db)
    try:
        await holder.execute("SELECT 1 FROM loan_accrual WHERE loan_id = 1 FOR NO KEY UPDATE")
        await holder.execute(
            "UPDATE loan_accrual SET interest_extra_fen = interest_extra_fen + 100 "
            "WHERE loan_id = 1"
        )
        chunk = await _accrue(scratch)
        for _ in range(100):
            waiting = await holder.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                   AND query LIKE '%eod_accrue_chunk%' AND datname = current_database()"""
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting == 1, "the chunk never waited for the held row"
        await held.commit()
        row = await chunk
    finally:
        await holder.close()
    assert row is not None and row["interest_fen"] == 2_194 + 100
    assert (
        await scratch.fetchval("SELECT interest_accrued_fen FROM loan_accrual WHERE loan_id = 1")
        == 2_294
    )


async def test_a_chunk_does_not_wait_for_a_request_holding_the_loan(
    scratch: asyncpg.Connection, scratch_db: str
) -> None:
    """A repayment's phase A holds the loan for as long as its inline debit takes: the
    chunk neither waits for it nor makes it wait (the loan row is not locked by it)."""
    await _migrated_with_one_loan(scratch)
    holder, held = await _holding_loan(scratch_db)
    try:
        row = await asyncio.wait_for(await _accrue(scratch), timeout=10)
        await holder.execute("UPDATE loan SET updated_at = now() WHERE loan_id = 1")
        await held.commit()
    finally:
        await holder.close()
    assert row is not None and row["interest_fen"] == 2_194


async def test_every_loan_booked_has_its_row_of_the_sub_ledger(
    scratch: asyncpg.Connection,
) -> None:
    await apply_migrations(scratch, load_migrations(SHARD_MIGRATIONS))
    await _with_plans(scratch, (1, 2))
    rows = await scratch.fetch(
        "SELECT loan_id, customer_id, interest_accrued_fen, interest_settled_fen "
        "FROM loan_accrual ORDER BY loan_id"
    )
    assert [tuple(r) for r in rows] == [(1, 1, 0, 0), (2, 2, 0, 0)]

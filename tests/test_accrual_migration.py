"""Migration 0012 on a shard that already has loans booked on the cash basis: what they
were paid counts as accrued and received (nothing is booked twice), their unpaid
charges are posted to the receivable by the first accrual chunk (opening), and the
plan's next due date is the oldest one unpaid."""

from __future__ import annotations

import datetime as dt

import asyncpg

from engine.migrate import SHARD_MIGRATIONS
from ledger.store import ensure_chart
from sharding.migrations import apply_migrations, load_migrations
from tests import books
from tests.test_loan_plan import loan_with_plan

DAY_END_MIGRATION = 12


async def test_cash_basis_loans_join_the_accrual_basis_without_double_income(
    scratch: asyncpg.Connection,
) -> None:
    migrations = load_migrations(SHARD_MIGRATIONS)
    await apply_migrations(scratch, migrations[: DAY_END_MIGRATION - 1])
    async with scratch.transaction():
        await ensure_chart(scratch)
    await loan_with_plan(scratch, 1)
    await apply_migrations(scratch, migrations)
    # ROWS: interest paid 1,200 + 800; unpaid charges 120 + 7; installment 2 is the oldest
    # with principal unpaid.
    accrual = await scratch.fetchrow("SELECT * FROM loan_accrual WHERE loan_id = 1")
    assert accrual is not None
    assert (accrual["interest_accrued_fen"], accrual["interest_extra_fen"]) == (2_000, 0)
    assert accrual["penalty_opening_fen"] == 127
    assert await scratch.fetchval("SELECT next_due_date FROM loan_plan WHERE loan_id = 1") == (
        dt.date(2026, 3, 10)
    )
    day = dt.date(2026, 3, 25)
    async with scratch.transaction():
        row = await scratch.fetchrow(
            "SELECT * FROM eod_accrue_chunk($1, 0, 10, 9001, 9002, 0)", day
        )
    assert row is not None and (row["loans"], row["opening_fen"]) == (1, 127)
    # The interest accrued is only what was earned and not yet counted: installment 3's
    # 400 over 15 of its 31 days (193.55 -> 194); installments 1 and 2 were counted in
    # full when paid (2,000 of interest paid).
    assert row["interest_fen"] == 194
    held = await scratch.fetch(
        "SELECT code, debit_total_fen - credit_total_fen FROM ledger_account "
        "WHERE owner_id = 1 AND customer_id IS NOT NULL"
    )
    assert dict(held) == {"loan_penalty_receivable": 127}
    # The interest in the accrual sub-ledger and its control account (migration 0023).
    assert (
        await scratch.fetchval(
            "SELECT interest_accrued_fen - interest_settled_fen FROM loan_accrual WHERE loan_id = 1"
        )
        == 194
    )
    assert (
        await scratch.fetchval(
            "SELECT sum(debit_total_fen - credit_total_fen) FROM ledger_account "
            "WHERE code = 'accrued_interest_receivable'"
        )
        == 194
    )
    assert await books._balanced(scratch) == []
    assert await books._penalty_receivables(scratch) == []

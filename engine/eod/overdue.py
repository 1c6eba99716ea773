"""Step `overdue`: for every loan late on the day — penalty and compound interest for
the day, days past due and class, and the post-loan rules.

    chunk of late loans (next_due_date before the day), locked with their plans,
    those with a repayment in progress passed over (its completion books on its own
    date; the next day-end catches their days up)
      ─► ledger.overdue.accrue_overdue(state, day): each day's charges, per loan
      ─► plans rewritten
      ─► loan_risk and class changes; rules: lines frozen, collection cases opened
      ─► last, one posting per LEGS_MAX − 1 loans:
         Dr loan_penalty_receivable (each loan) / Cr penalty_income
      ─► checkpoint, same commit

Locks in a repayment's completion's order (engine/services/repayments.py, ledger 0018):
loans, then lines, then ledger stripes. The customer of a late loan may be repaying
another on the same line: a chunk holding a stripe while it waited to freeze the line
would deadlock with that completion, which holds the line and then posts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg

from engine.eod import collection, keys, progress, risk
from engine.eod.context import EodContext
from engine.services.loan_store import LOAN_WITH_PLAN_SQL, StoredLoan, rewrite_plan, stored_loan
from ledger.chart import Code
from ledger.overdue import accrue_overdue, days_past_due
from ledger.postings import LEGS_MAX, Leg, Posting
from ledger.store import post_many

STEP = "overdue"
LATE_SQL = """SELECT l.loan_id FROM loan_plan p JOIN loan l ON l.loan_id = p.loan_id
              WHERE p.next_due_date < $1 AND l.status = 'disbursed' AND l.loan_id > $2
              ORDER BY l.loan_id LIMIT $3"""
_LOCK_SQL = (
    LOAN_WITH_PLAN_SQL
    + """ WHERE loan.loan_id = ANY($1::bigint[]) AND loan.status = 'disbursed'
          AND p.next_due_date < $2 AND loan.pending_repayment_id IS NULL
          ORDER BY loan.loan_id FOR UPDATE OF loan, p"""
)


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, LATE_SQL, (day,), after, ctx.settings.overdue_chunk)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, loan_ids: list[int]
) -> int:
    """Book `loan_ids` (the next chunk after `after`); returns how many were late."""
    async with conn.transaction():
        records = await conn.fetch(_LOCK_SQL, loan_ids, day)
        loans = [stored_loan(r) for r in records]
        charges = await _book_charges(conn, day, loans)
        late = [
            collection.LateLoan(
                loan.row.loan_id,
                loan.row.customer_id,
                loan.row.tenant_id,
                days_past_due(loan.state, day),
            )
            for loan in loans
        ]
        await risk.record(
            conn, day, [risk.Risk(x.loan_id, x.customer_id, x.days_past_due) for x in late]
        )
        await _apply_rules(conn, ctx, day, late)
        await _post(conn, ctx, day, charges)  # stripes after the lines (see the top)
        await progress.advance(conn, day, STEP, start=after, last=loan_ids[-1], rows=len(loans))
    return len(loans)


async def _book_charges(
    conn: asyncpg.Connection, day: dt.date, loans: list[StoredLoan]
) -> list[tuple[StoredLoan, int]]:
    """Each loan's charges through the day into its plan; returns (loan, fen booked)."""
    booked = []
    for loan in loans:
        if _booked_past(loan, day):  # a repayment after the cut-over booked this day already
            continue
        state = accrue_overdue(loan.state, day, loan.row.penalty_multiplier)
        before = sum(s.penalty_unpaid_fen + s.compound_unpaid_fen for s in loan.state.statuses)
        after = sum(s.penalty_unpaid_fen + s.compound_unpaid_fen for s in state.statuses)
        if state != loan.state:
            await rewrite_plan(conn, loan.row, state, loan.penalty_paid_fen)
        if after > before:
            booked.append((loan, after - before))
    return booked


def _booked_past(loan: StoredLoan, day: dt.date) -> bool:
    return any(
        s.accrued_through is not None and s.accrued_through > day for s in loan.state.statuses
    )


async def _post(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, charges: list[tuple[StoredLoan, int]]
) -> None:
    postings = []
    per_posting = LEGS_MAX - 1
    for start in range(0, len(charges), per_posting):
        group = charges[start : start + per_posting]
        legs = [
            Leg(Code.LOAN_PENALTY_RECEIVABLE, loan.row.loan_id, fen, loan.row.customer_id)
            for loan, fen in group
        ]
        legs.append(Leg(Code.PENALTY_INCOME, None, -sum(fen for _, fen in group)))
        txn_id = ctx.ids.next_id(ctx.logical_shard)
        postings.append(Posting(txn_id, None, "penalty_accrual", None, day, tuple(legs)))
    await post_many(conn, postings)


async def _apply_rules(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, late: list[collection.LateLoan]
) -> None:
    for rule in ctx.rules.dpd_rules("freeze_lines"):
        threshold = rule.when.dpd_above
        assert threshold is not None
        hit = [x.customer_id for x in late if x.days_past_due > threshold]
        await collection.freeze_lines(conn, hit, rule.name)
    cases = [x for x in late if ctx.rules.fires("collection_queue", x.days_past_due)]
    await collection.open_cases(conn, ctx.reference.data, day, cases)

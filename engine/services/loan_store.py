"""Loans and their installment plans in the shard, to and from `ledger.overdue.LoanState`.

    loan row + installment rows  <->  LoanState(Plan(terms, installments), statuses)

`penalty_paid_fen` is kept per installment beside the state (the calculator
does not need it). Rewriting a plan replaces the loan's installment rows in one
statement pair; the loan row carries `plan_version`, raised on each change.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import asyncpg
import msgspec

from engine.errors import NotFound
from engine.reference import Channel
from ledger.overdue import InstallmentStatus, LoanState
from ledger.schedule import Installment, LoanTerms, Plan, RepaymentMethod

LOAN_COLUMNS = """loan_id, customer_id, credit_line_id, tenant_id, channel_id, product_code,
    customer_cap_group, receipt_no, principal_fen, outstanding_principal_fen, annual_rate_pct,
    penalty_multiplier, repayment_method, term_months, grace_months, start_date, maturity_date,
    status, disburse_to_masked, payment_fen, prepaid_fen, plan_version, requested_at,
    disbursed_at, settled_at, pending_repayment_id, failure_reason"""


class LoanRow(msgspec.Struct, frozen=True):
    loan_id: int
    customer_id: int
    credit_line_id: int
    tenant_id: str
    channel_id: str
    product_code: str
    customer_cap_group: str | None
    receipt_no: str
    principal_fen: int
    outstanding_principal_fen: int
    annual_rate_pct: Decimal
    penalty_multiplier: Decimal
    repayment_method: str
    term_months: int
    grace_months: int
    start_date: dt.date
    maturity_date: dt.date
    status: str
    disburse_to_masked: str
    payment_fen: int
    prepaid_fen: int
    plan_version: int
    requested_at: dt.datetime
    disbursed_at: dt.datetime | None
    settled_at: dt.datetime | None
    pending_repayment_id: int | None
    failure_reason: str | None


class StoredLoan(msgspec.Struct, frozen=True):
    row: LoanRow
    state: LoanState
    penalty_paid_fen: tuple[int, ...]


def loan_row(record: asyncpg.Record) -> LoanRow:
    return LoanRow(**dict(record))


def terms_of(row: LoanRow) -> LoanTerms:
    return LoanTerms(
        method=RepaymentMethod(row.repayment_method),
        annual_rate_pct=row.annual_rate_pct,
        months=row.term_months,
        start=row.start_date,
        grace_months=row.grace_months,
    )


async def fetch_loan(
    conn: asyncpg.Connection, channel: Channel, loan_id: int, *, lock: bool = False
) -> StoredLoan:
    """The loan of this channel's tenant with its plan, or 404 as if it did not exist."""
    sql = f"SELECT {LOAN_COLUMNS} FROM loan WHERE loan_id = $1"
    record = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), loan_id)
    if record is None or record["tenant_id"] != channel.tenant_id:
        raise NotFound("LOAN_NOT_FOUND", f"no loan {loan_id}")
    return await with_plan(conn, loan_row(record))


async def with_plan(conn: asyncpg.Connection, row: LoanRow) -> StoredLoan:
    records = await conn.fetch(
        """SELECT seq, due_date, principal_fen, interest_fen, balance_after_fen,
                  principal_paid_fen, interest_paid_fen, penalty_unpaid_fen, compound_unpaid_fen,
                  accrued_through, penalty_paid_fen
           FROM installment WHERE loan_id = $1 ORDER BY seq""",
        row.loan_id,
    )
    installments = tuple(
        Installment(
            r["seq"], r["due_date"], r["principal_fen"], r["interest_fen"], r["balance_after_fen"]
        )
        for r in records
    )
    statuses = tuple(
        InstallmentStatus(
            principal_paid_fen=r["principal_paid_fen"],
            interest_paid_fen=r["interest_paid_fen"],
            penalty_unpaid_fen=r["penalty_unpaid_fen"],
            compound_unpaid_fen=r["compound_unpaid_fen"],
            accrued_through=r["accrued_through"],
        )
        for r in records
    )
    plan = Plan(terms_of(row), row.principal_fen, row.payment_fen, installments, row.prepaid_fen)
    return StoredLoan(row, LoanState(plan, statuses), tuple(r["penalty_paid_fen"] for r in records))


def installment_arrays(
    state: LoanState, penalty_paid_fen: tuple[int, ...]
) -> tuple[list[object], ...]:
    """Column arrays of the installment rows, for one `unnest` insert."""
    columns: tuple[list[object], ...] = tuple([] for _ in range(11))
    for index, (item, status) in enumerate(
        zip(state.plan.installments, state.statuses, strict=True)
    ):
        values = (
            item.seq,
            item.due_date,
            item.principal_fen,
            item.interest_fen,
            item.balance_after_fen,
            status.principal_paid_fen,
            status.interest_paid_fen,
            status.penalty_unpaid_fen,
            status.compound_unpaid_fen,
            status.accrued_through,
            penalty_paid_fen[index] if index < len(penalty_paid_fen) else 0,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


INSERT_INSTALLMENTS_SQL = """
INSERT INTO installment (loan_id, customer_id, seq, due_date, principal_fen, interest_fen,
    balance_after_fen, principal_paid_fen, interest_paid_fen, penalty_unpaid_fen,
    compound_unpaid_fen, accrued_through, penalty_paid_fen)
SELECT $1, $2, * FROM unnest($3::smallint[], $4::date[], $5::bigint[], $6::bigint[], $7::bigint[],
    $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::date[], $13::bigint[])
"""


async def rewrite_plan(
    conn: asyncpg.Connection, row: LoanRow, state: LoanState, penalty_paid_fen: tuple[int, ...]
) -> None:
    """Replace the loan's installment rows with `state` (after a payment or a new plan)."""
    await conn.execute("DELETE FROM installment WHERE loan_id = $1", row.loan_id)
    await conn.execute(
        INSERT_INSTALLMENTS_SQL,
        row.loan_id,
        row.customer_id,
        *installment_arrays(state, penalty_paid_fen),
    )

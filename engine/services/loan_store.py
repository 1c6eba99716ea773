"""Loans and their installment plans in the shard, to and from `ledger.overdue.LoanState`.

    loan row + loan_plan row  <->  LoanState(Plan(terms, installments), statuses)

The plan is one `loan_plan` row of column arrays, an element per installment
(ledger/migrations/0009_plan_as_one_row.sql): it is read with its loan in one
statement and replaced whole by one UPDATE after each payment. The loan row
carries `plan_version`, raised on each change. `penalty_paid_fen` is kept per
installment beside the state (the calculator does not need it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import asyncpg
import msgspec

from engine.contract.errors import NotFound
from engine.stores.reference import Channel
from ledger.overdue import InstallmentStatus, LoanState
from ledger.schedule import Installment, LoanTerms, Plan, RepaymentMethod


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


def terms_of(row: LoanRow) -> LoanTerms:
    return LoanTerms(
        method=RepaymentMethod(row.repayment_method),
        annual_rate_pct=row.annual_rate_pct,
        months=row.term_months,
        start=row.start_date,
        grace_months=row.grace_months,
    )


# The plan's columns, in the order `installment_arrays` lays them out.
PLAN_COLUMNS: Final = (
    "seq", "due_date", "principal_fen", "interest_fen", "balance_after_fen",
    "principal_paid_fen", "interest_paid_fen", "penalty_unpaid_fen", "compound_unpaid_fen",
    "accrued_through", "penalty_paid_fen",
)  # fmt: skip
_LOAN_FIELDS: Final = LoanRow.__struct_fields__
# A loan and its plan, one row: the plan's columns named plan_<column>.
LOAN_WITH_PLAN_SQL: Final = (
    "SELECT {}, {} FROM loan JOIN loan_plan p ON p.loan_id = loan.loan_id".format(
        ", ".join(f"loan.{name}" for name in _LOAN_FIELDS),
        ", ".join(f"p.{name} AS plan_{name}" for name in PLAN_COLUMNS),
    )
)

# Select columns for a read that a locked statement later checks against: the loan's and
# its plan's row versions and the loan's two receivables (`LOAN_WITH_PLAN_SQL`'s aliases),
# the interest one from the accrual sub-ledger (ledger migration 0023).
VERSIONS_AND_RECEIVABLES: Final = """loan.xmin::text AS loan_xmin, p.xmin::text AS plan_xmin,
       coalesce((SELECT a.interest_accrued_fen - a.interest_settled_fen FROM loan_accrual a
                 WHERE a.loan_id = loan.loan_id), 0) AS interest_recv,
       coalesce((SELECT a.debit_total_fen - a.credit_total_fen FROM ledger_account a
                 WHERE a.code = 'loan_penalty_receivable' AND a.owner_id = loan.loan_id), 0)
           AS penalty_recv, """


async def fetch_loan(
    conn: asyncpg.Connection, channel: Channel, loan_id: int, *, lock: bool = False
) -> StoredLoan:
    """The loan of this channel's tenant with its plan, or 404 as if it did not exist."""
    sql = LOAN_WITH_PLAN_SQL + " WHERE loan.loan_id = $1"
    # Both rows locked, not only the loan's: a read that waited for the lock gets the
    # latest version of the locked rows only, and would otherwise pair the loan as
    # the last payment left it with the plan from before that payment.
    record = await conn.fetchrow(sql + (" FOR UPDATE OF loan, p" if lock else ""), loan_id)
    if record is None or record["tenant_id"] != channel.tenant_id:
        raise NotFound("LOAN_NOT_FOUND", f"no loan {loan_id}")
    return stored_loan(record)


def stored_loan(record: asyncpg.Record | Mapping[str, Any]) -> StoredLoan:
    """A `LOAN_WITH_PLAN_SQL` record as the loan, its state and its penalty paid."""
    row = LoanRow(**{name: record[name] for name in _LOAN_FIELDS})
    (seq, due, principal, interest, balance, principal_paid, interest_paid, penalty_unpaid,
     compound_unpaid, accrued_through, penalty_paid) = (
        record["plan_" + name] for name in PLAN_COLUMNS
    )  # fmt: skip
    installments = tuple(map(Installment, seq, due, principal, interest, balance))
    statuses = tuple(
        map(InstallmentStatus, principal_paid, interest_paid, penalty_unpaid, compound_unpaid,
            accrued_through)
    )  # fmt: skip
    plan = Plan(terms_of(row), row.principal_fen, row.payment_fen, installments, row.prepaid_fen)
    return StoredLoan(row, LoanState(plan, statuses), tuple(penalty_paid))


def installment_arrays(
    state: LoanState, penalty_paid_fen: tuple[int, ...]
) -> tuple[list[object], ...]:
    """The plan's column arrays (`PLAN_COLUMNS`), for `loan_plan`."""
    columns: tuple[list[object], ...] = tuple([] for _ in PLAN_COLUMNS)
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


_REWRITE_PLAN_SQL: Final = "UPDATE loan_plan SET {} WHERE loan_id = $1".format(
    ", ".join(f"{name} = ${n}" for n, name in enumerate(PLAN_COLUMNS, start=2))
)


async def rewrite_plan(
    conn: asyncpg.Connection, row: LoanRow, state: LoanState, penalty_paid_fen: tuple[int, ...]
) -> None:
    """Replace the loan's plan with `state` (after a payment or a new plan)."""
    status = await conn.execute(
        _REWRITE_PLAN_SQL, row.loan_id, *installment_arrays(state, penalty_paid_fen)
    )
    if status != "UPDATE 1":  # every loan has its plan row: a missing one is a bug
        raise RuntimeError(f"loan {row.loan_id}: plan not rewritten ({status})")

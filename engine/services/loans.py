"""Reading loans: one loan, its schedule, a customer's loans, a payoff quote."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import asyncpg

from engine.contract.errors import Unprocessable
from engine.contract.messages import (
    InstallmentView,
    LoanList,
    LoanView,
    NextDue,
    PayoffQuoteView,
    ScheduleView,
)
from engine.services.customers import lock_customer
from engine.services.loan_store import LOAN_WITH_PLAN_SQL, StoredLoan, fetch_loan, stored_loan
from engine.stores.reference import Channel
from ledger.money import format_fen, format_rate_pct
from ledger.overdue import classification_floor, days_past_due, unpaid_fen
from ledger.prepayment import PrepaymentError, payoff_quote
from ledger.schedule import ScheduleError

LOANS_PER_CUSTOMER_MAX = 200


def installment_views(loan: StoredLoan, today: dt.date) -> list[InstallmentView]:
    views = []
    state = loan.state
    for index, (item, status) in enumerate(
        zip(state.plan.installments, state.statuses, strict=True)
    ):
        unpaid = unpaid_fen(item, status)
        label: Literal["paid", "overdue", "due", "pending"]
        if unpaid == 0:
            label = "paid"
        elif item.due_date < today:
            label = "overdue"
        elif item.due_date == today:
            label = "due"
        else:
            label = "pending"
        views.append(
            InstallmentView(
                seq=item.seq,
                due_date=item.due_date,
                principal=format_fen(item.principal_fen),
                interest=format_fen(item.interest_fen),
                total=format_fen(item.total_fen),
                principal_paid=format_fen(status.principal_paid_fen),
                interest_paid=format_fen(status.interest_paid_fen),
                penalty_unpaid=format_fen(status.penalty_unpaid_fen + status.compound_unpaid_fen),
                penalty_paid=format_fen(loan.penalty_paid_fen[index]),
                status=label,
            )
        )
    return views


def _next_due(loan: StoredLoan) -> NextDue | None:
    for item, status in zip(loan.state.plan.installments, loan.state.statuses, strict=True):
        unpaid = unpaid_fen(item, status)
        if unpaid:
            return NextDue(due_date=item.due_date, amount=format_fen(unpaid))
    return None


def loan_view(loan: StoredLoan, today: dt.date, risk: asyncpg.Record | None = None) -> LoanView:
    """The loan as the API shows it; `risk` is its `loan_risk` row, if the day-end wrote
    one: then the class is the day-end's, with its date."""
    row = loan.row
    active = row.status == "disbursed"
    dpd = days_past_due(loan.state, today) if active else 0
    if risk is not None and active:
        classification, since = str(risk["classification"]), risk["classified_on"]
    else:
        classification, since = str(classification_floor(dpd)), None
    charges = sum(s.penalty_unpaid_fen + s.compound_unpaid_fen for s in loan.state.statuses)
    return LoanView(
        loan_id=str(row.loan_id),
        receipt_no=row.receipt_no,
        customer_id=str(row.customer_id),
        credit_line_id=str(row.credit_line_id),
        product_code=row.product_code,
        status=row.status,
        principal=format_fen(row.principal_fen),
        outstanding_principal=format_fen(row.outstanding_principal_fen),
        annual_rate_pct=format_rate_pct(row.annual_rate_pct),
        repayment_method=row.repayment_method,
        term_months=row.term_months,
        start_date=row.start_date,
        maturity_date=row.maturity_date,
        days_past_due=dpd,
        classification=classification,
        classification_since=since,
        penalty_accrued=format_fen(charges),
        next_due=_next_due(loan) if active else None,
        disburse_to_masked=row.disburse_to_masked,
        requested_at=row.requested_at,
        disbursed_at=row.disbursed_at,
        failure_reason=row.failure_reason,
    )


async def get_loan(
    conn: asyncpg.Connection, channel: Channel, loan_id: int, today: dt.date
) -> LoanView:
    loan = await fetch_loan(conn, channel, loan_id)
    risk = await conn.fetchrow(
        "SELECT classification, classified_on FROM loan_risk WHERE loan_id = $1", loan_id
    )
    return loan_view(loan, today, risk)


async def get_schedule(
    conn: asyncpg.Connection, channel: Channel, loan_id: int, today: dt.date
) -> ScheduleView:
    loan = await fetch_loan(conn, channel, loan_id)
    return ScheduleView(str(loan_id), loan.row.plan_version, installment_views(loan, today))


async def customer_loans(
    conn: asyncpg.Connection, channel: Channel, customer_id: int, today: dt.date
) -> LoanList:
    await lock_customer(conn, channel, customer_id)
    records = await conn.fetch(
        LOAN_WITH_PLAN_SQL + " WHERE loan.customer_id = $1 ORDER BY loan.loan_id DESC LIMIT $2",
        customer_id,
        LOANS_PER_CUSTOMER_MAX,
    )
    # The day-end's class of each, as GET /v1/loans/{id} shows it (one read for all).
    risks = {
        r["loan_id"]: r
        for r in await conn.fetch(
            """SELECT loan_id, classification, classified_on FROM loan_risk
               WHERE loan_id = ANY($1::bigint[])""",
            [r["loan_id"] for r in records],
        )
    }
    loans = [loan_view(stored_loan(r), today, risks.get(r["loan_id"])) for r in records]
    return LoanList(customer_id=str(customer_id), loans=loans)


async def quote_payoff(
    conn: asyncpg.Connection, channel: Channel, loan_id: int, on: dt.date, today: dt.date
) -> PayoffQuoteView:
    loan = await fetch_loan(conn, channel, loan_id)
    if loan.row.status != "disbursed":
        raise Unprocessable("LOAN_NOT_ACTIVE", f"the loan is {loan.row.status}")
    if on < today:
        raise Unprocessable(
            "QUOTE_DATE_PAST", "a payoff can be quoted for the business date or later"
        )
    try:
        quote = payoff_quote(loan.state, on, loan.row.penalty_multiplier)
    except (PrepaymentError, ScheduleError) as exc:
        raise Unprocessable(exc.code, exc.detail) from exc
    return PayoffQuoteView(
        loan_id=str(loan_id),
        on=on,
        principal=format_fen(quote.principal_fen),
        interest=format_fen(quote.interest_fen),
        overdue_principal=format_fen(quote.due_principal_fen),
        overdue_interest=format_fen(quote.due_interest_fen),
        penalty=format_fen(quote.penalty_fen + quote.compound_fen),
        total=format_fen(quote.total_fen),
    )

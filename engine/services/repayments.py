"""Repayments (还款): one request, one or several loans of one customer (合并扣款),
all or nothing, in one shard transaction.

    lock the loans in loan-ID order ─► per item, on the business date:
        book overdue charges through today (ledger.overdue.accrue_overdue), then
        due     ─► waterfall over what is due (ledger.allocation.allocate_due)
        prepay  ─► interest on the prepaid principal, then the plan rule (ledger.prepayment)
        payoff  ─► the payoff quote, settled in full (ledger.allocation.settle_payoff)
    ─► rewrite each plan ─► loan outstanding and status ─► line.used -= principal (revolving)
    ─► one posting: Dr core_settlement / Cr loan_principal, interest_income, penalty_income
    ─► repayment and repayment_item rows

Loans are locked in ascending ID order and their lines after them, so two
combined repayments never deadlock. Until collection through core banking
lands, the card debit is taken as done.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from engine.api_types import (
    Allocation,
    RepaymentCreate,
    RepaymentItemCreate,
    RepaymentItemView,
    RepaymentView,
)
from engine.errors import BadRequest, NotFound, Unprocessable
from engine.identity import IdentityError, mask_bank_card, parse_bank_card
from engine.reference import Channel
from engine.services.context import Services
from engine.services.customers import lock_customer
from engine.services.loan_store import StoredLoan, fetch_loan, rewrite_plan
from engine.services.loans import installment_views
from ledger import allocation
from ledger.chart import Code
from ledger.money import MoneyFormatError, format_fen, parse_amount
from ledger.overdue import accrue_overdue
from ledger.postings import Leg, Posting
from ledger.prepayment import PrepaymentRule, payoff_quote, prepay, principal_for_cash_fen
from ledger.schedule import ScheduleError
from ledger.store import post
from sharding.ids import shard_of_id


class ItemResult(msgspec.Struct, frozen=True):
    item: RepaymentItemCreate
    loan: StoredLoan
    result: allocation.Allocation
    prepay_rule: str | None


def _amount(item: RepaymentItemCreate) -> int | None:
    if item.amount is None:
        return None
    try:
        return parse_amount(item.amount)
    except MoneyFormatError as exc:
        raise BadRequest(exc.code, f"{item.loan_id}: {exc.detail}") from exc


def _apply(loan: StoredLoan, item: RepaymentItemCreate, today: dt.date) -> ItemResult:
    if loan.row.status != "disbursed":
        raise Unprocessable("LOAN_NOT_ACTIVE", f"loan {loan.row.loan_id} is {loan.row.status}")
    multiplier = loan.row.penalty_multiplier
    state = accrue_overdue(loan.state, today, multiplier)
    amount_fen = _amount(item)
    rule: str | None = None
    if item.mode == "due":
        due_fen = allocation.due_total_fen(state, today)
        if due_fen == 0:
            raise Unprocessable("NOTHING_DUE", f"nothing is due on loan {item.loan_id}")
        result = allocation.allocate_due(
            state, today, due_fen if amount_fen is None else amount_fen
        )
    elif item.mode == "prepay":
        if amount_fen is None:
            raise BadRequest("AMOUNT_REQUIRED", f"{item.loan_id}: a prepayment needs an amount")
        rule = item.prepay_rule or PrepaymentRule.REDUCE_NEAREST
        principal_fen = principal_for_cash_fen(state, today, amount_fen)
        done = prepay(state, today, principal_fen, rule)
        result = allocation.Allocation(0, done.interest_fen, done.principal_fen, done.state, ())
    else:
        quote = payoff_quote(state, today, multiplier)
        if amount_fen is not None and amount_fen != quote.total_fen:
            raise Unprocessable(
                "PAYOFF_AMOUNT_MISMATCH",
                f"{item.loan_id}: the payoff today is {format_fen(quote.total_fen)}",
            )
        result = allocation.settle_payoff(state, today, quote)
    if item.mode != "prepay" and item.prepay_rule is not None:
        raise BadRequest("PREPAY_RULE_NOT_APPLICABLE", "prepay_rule is only for mode prepay")
    return ItemResult(item, msgspec.structs.replace(loan, state=state), result, rule)


def _evaluate(loan: StoredLoan, item: RepaymentItemCreate, today: dt.date) -> ItemResult:
    try:
        return _apply(loan, item, today)
    except (allocation.AllocationError, ScheduleError) as exc:
        raise Unprocessable(exc.code, f"loan {item.loan_id}: {exc.detail}") from exc


async def repay(
    svc: Services, conn: asyncpg.Connection, channel: Channel, body: RepaymentCreate
) -> RepaymentView:
    customer_id = int(body.customer_id)
    try:
        card = parse_bank_card(body.debit_from)
    except IdentityError as exc:
        raise BadRequest(exc.code, exc.detail) from exc
    loan_ids = [int(item.loan_id) for item in body.items]
    if len(set(loan_ids)) != len(loan_ids):
        raise BadRequest("LOAN_REPEATED", "each loan may appear once in a repayment")
    await lock_customer(conn, channel, customer_id)
    today = svc.business_date
    results = []
    for item in sorted(body.items, key=lambda i: int(i.loan_id)):
        loan = await fetch_loan(conn, channel, int(item.loan_id), lock=True)
        if loan.row.customer_id != customer_id:
            raise NotFound("LOAN_NOT_FOUND", f"no loan {item.loan_id} of this customer")
        results.append(_evaluate(loan, item, today))
    repayment_id = svc.ids.next_id(shard_of_id(customer_id))
    await _store(conn, results, today)
    total_fen = sum(r.result.total_fen for r in results)
    await _post(
        svc, conn, customer_id=customer_id, repayment_id=repayment_id, results=results, today=today
    )
    await _record(
        conn,
        channel=channel,
        customer_id=customer_id,
        repayment_id=repayment_id,
        total_fen=total_fen,
        card_masked=mask_bank_card(card),
        results=results,
        today=today,
    )
    order = {loan_id: n for n, loan_id in enumerate(loan_ids)}
    results.sort(key=lambda r: order[r.loan.row.loan_id])
    return RepaymentView(
        repayment_id=str(repayment_id),
        customer_id=str(customer_id),
        status="succeeded",
        total=format_fen(total_fen),
        business_date=today,
        debit_from_masked=mask_bank_card(card),
        items=[_item_view(r, today) for r in results],
    )


def _settled(result: allocation.Allocation) -> bool:
    return all(
        status.principal_paid_fen == item.principal_fen
        and status.interest_paid_fen == item.interest_fen
        for item, status in zip(result.state.plan.installments, result.state.statuses, strict=True)
    )


async def _store(conn: asyncpg.Connection, results: list[ItemResult], today: dt.date) -> None:
    line_principal: dict[int, int] = {}
    for r in results:
        row = r.loan.row
        previous = r.loan.penalty_paid_fen
        added = r.result.penalty_paid_by_installment
        penalty_paid = tuple(
            (previous[i] if i < len(previous) else 0) + (added[i] if i < len(added) else 0)
            for i in range(len(r.result.state.plan.installments))
        )
        await rewrite_plan(conn, row, r.result.state, penalty_paid)
        settled = _settled(r.result)
        await conn.execute(
            """UPDATE loan SET outstanding_principal_fen = outstanding_principal_fen - $2,
                   payment_fen = $3, prepaid_fen = $4, plan_version = plan_version + $5,
                   status = CASE WHEN $6 THEN 'settled' ELSE status END,
                   settled_at = CASE WHEN $6 THEN now() ELSE settled_at END, updated_at = now()
               WHERE loan_id = $1""",
            row.loan_id,
            r.result.principal_fen,
            r.result.state.plan.payment_fen,
            r.result.state.plan.prepaid_fen,
            0 if r.item.mode == "due" else 1,
            settled,
        )
        line_principal[row.credit_line_id] = (
            line_principal.get(row.credit_line_id, 0) + r.result.principal_fen
        )
    for line_id in sorted(line_principal):
        await conn.execute(
            """UPDATE credit_line SET used_fen = used_fen - $2, updated_at = now()
               WHERE credit_line_id = $1""",
            line_id,
            line_principal[line_id],
        )


async def _post(
    svc: Services,
    conn: asyncpg.Connection,
    *,
    customer_id: int,
    repayment_id: int,
    results: list[ItemResult],
    today: dt.date,
) -> None:
    legs: list[Leg] = []
    interest_fen = penalty_fen = 0
    for r in results:
        if r.result.principal_fen:
            legs.append(Leg(Code.LOAN_PRINCIPAL, r.loan.row.loan_id, -r.result.principal_fen))
        interest_fen += r.result.interest_fen
        penalty_fen += r.result.penalty_fen
    if interest_fen:
        legs.append(Leg(Code.INTEREST_INCOME, None, -interest_fen))
    if penalty_fen:
        legs.append(Leg(Code.PENALTY_INCOME, None, -penalty_fen))
    total_fen = -sum(leg.amount_fen for leg in legs)
    legs.insert(0, Leg(Code.CORE_SETTLEMENT, None, total_fen))
    posting = Posting(
        txn_id=svc.ids.next_id(shard_of_id(customer_id)),
        customer_id=customer_id,
        kind="repayment",
        ref_id=repayment_id,
        business_date=today,
        legs=tuple(legs),
    )
    await post(conn, posting)


async def _record(
    conn: asyncpg.Connection,
    *,
    channel: Channel,
    customer_id: int,
    repayment_id: int,
    total_fen: int,
    card_masked: str,
    results: list[ItemResult],
    today: dt.date,
) -> None:
    await conn.execute(
        """INSERT INTO repayment (repayment_id, customer_id, tenant_id, channel_id, status,
               total_fen, debit_from_masked, business_date)
           VALUES ($1, $2, $3, $4, 'succeeded', $5, $6, $7)""",
        repayment_id,
        customer_id,
        channel.tenant_id,
        channel.channel_id,
        total_fen,
        card_masked,
        today,
    )
    await conn.executemany(
        """INSERT INTO repayment_item (repayment_id, loan_id, customer_id, mode, prepay_rule,
               amount_fen, penalty_fen, interest_fen, principal_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        [
            (
                repayment_id,
                r.loan.row.loan_id,
                customer_id,
                r.item.mode,
                r.prepay_rule,
                r.result.total_fen,
                r.result.penalty_fen,
                r.result.interest_fen,
                r.result.principal_fen,
            )
            for r in results
        ],
    )


def _item_view(r: ItemResult, today: dt.date) -> RepaymentItemView:
    settled = _settled(r.result)
    penalty_paid = r.result.penalty_paid_by_installment
    previous = r.loan.penalty_paid_fen
    new_loan = StoredLoan(
        row=r.loan.row,
        state=r.result.state,
        penalty_paid_fen=tuple(
            (previous[i] if i < len(previous) else 0)
            + (penalty_paid[i] if i < len(penalty_paid) else 0)
            for i in range(len(r.result.state.plan.installments))
        ),
    )
    return RepaymentItemView(
        loan_id=str(r.loan.row.loan_id),
        mode=r.item.mode,
        prepay_rule=r.prepay_rule,
        amount=format_fen(r.result.total_fen),
        allocation=Allocation(
            penalty=format_fen(r.result.penalty_fen),
            interest=format_fen(r.result.interest_fen),
            principal=format_fen(r.result.principal_fen),
        ),
        loan_status="settled" if settled else r.loan.row.status,
        outstanding_principal=format_fen(
            r.loan.row.outstanding_principal_fen - r.result.principal_fen
        ),
        plan=installment_views(new_loan, today),
    )


async def get_repayment(
    conn: asyncpg.Connection, channel: Channel, repayment_id: int, today: dt.date
) -> RepaymentView:
    row = await conn.fetchrow("SELECT * FROM repayment WHERE repayment_id = $1", repayment_id)
    if row is None or row["tenant_id"] != channel.tenant_id:
        raise NotFound("REPAYMENT_NOT_FOUND", f"no repayment {repayment_id}")
    items = await conn.fetch(
        "SELECT * FROM repayment_item WHERE repayment_id = $1 ORDER BY loan_id", repayment_id
    )
    views = []
    for item in items:
        loan = await fetch_loan(conn, channel, item["loan_id"])
        views.append(
            RepaymentItemView(
                loan_id=str(item["loan_id"]),
                mode=item["mode"],
                prepay_rule=item["prepay_rule"],
                amount=format_fen(item["amount_fen"]),
                allocation=Allocation(
                    penalty=format_fen(item["penalty_fen"]),
                    interest=format_fen(item["interest_fen"]),
                    principal=format_fen(item["principal_fen"]),
                ),
                loan_status=loan.row.status,
                outstanding_principal=format_fen(loan.row.outstanding_principal_fen),
                plan=installment_views(loan, today),
            )
        )
    return RepaymentView(
        repayment_id=str(repayment_id),
        customer_id=str(row["customer_id"]),
        status=row["status"],
        total=format_fen(row["total_fen"]),
        business_date=row["business_date"],
        debit_from_masked=row["debit_from_masked"],
        items=views,
    )

"""Drawdowns (提款): from the line check to the booked loan, in one commit.

    the common case (`draw_down_at_once`, no transaction, two round trips):
      read line ─► check status, expiry, method, term, bullet rule, available
      ─► plan (ledger.schedule) ─► book_drawdowns(...) in the shard, one statement,
         with the drawdowns that reached it meanwhile (`engine.services.booking_batch`):
           lock line [─► lock customer, sum outstanding, check the cap]
           ─► recheck what the plan rested on ─► idempotency record
           ─► loan + installments ─► line.used += amount
           ─► post: Dr loan_principal / Cr disbursement_clearing   (the loan is booked)
           ─► outbox: pay the card through core banking            (status `disbursing`)
    anything the locks find changed (`draw_down`, one locked transaction):
      lock line ─► [lock customer] ─► the same checks, refusals named ─► book_drawdowns

The relay carries the payment out and applies core's answer
(`engine.services.disbursement`): `disbursed`, or `failed` with the booking
reversed and the line restored.

Locks are taken line first, then customer, by every path that takes both, so
two drawdowns never deadlock. The database's CHECK (used <= limit) refuses an
overdraft even if the code were wrong (guarantee 2).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from engine.contract.codec import encode
from engine.contract.errors import BadRequest, Unprocessable
from engine.contract.messages import DrawdownCreate, DrawdownView, PlanSummary
from engine.idempotency.records import AtOnce, Claim, StoredResponse
from engine.security.identity import IdentityError, mask_bank_card, parse_bank_card
from engine.services import cards, product_rules
from engine.services.booking_batch import book_alone
from engine.services.context import Services
from engine.services.credit_lines import fetch_line
from engine.services.customers import BANK_CARD, lock_customer
from engine.services.loan_store import installment_arrays
from engine.stores.reference import Channel, Product
from engine.stores.shards import RetryTransaction, read
from ledger.chart import Code
from ledger.money import MoneyFormatError, format_fen, format_rate_pct, parse_amount
from ledger.overdue import fresh_state
from ledger.postings import Leg, Posting
from ledger.schedule import Plan, ScheduleError, build_plan
from ledger.store import posting_args
from sharding.ids import shard_of_id


def _check_request(
    product: Product, line: asyncpg.Record, body: DrawdownCreate, today: dt.date
) -> None:
    # The customer's standing first: it can change long after the line was granted.
    if line["blacklisted"]:
        raise Unprocessable(
            "CUSTOMER_BLACKLISTED", "the customer is on the black list: no new drawdowns"
        )
    if line["bureau_flag"] is not None:
        raise Unprocessable(
            "CUSTOMER_BUREAU_FLAGGED",
            f"the customer's credit report was flagged ({line['bureau_flag']}): "
            "no new drawdowns until the flag is cleared",
        )
    if line["application_id"] is not None and line["contract_signed_at"] is None:
        raise Unprocessable(
            "CONTRACT_NOT_SIGNED",
            "the loan contract of this line is not signed yet (POST /v1/contracts/{id}/sign)",
        )
    if line["status"] != "active":
        raise Unprocessable(
            "CREDIT_LINE_FROZEN", f"the credit line is frozen: {line['status_reason']}"
        )
    if line["expires_on"] < today:
        raise Unprocessable(
            "CREDIT_LINE_EXPIRED", f"the credit line expired on {line['expires_on']}"
        )
    if body.repayment_method not in line["repayment_methods"]:
        raise Unprocessable(
            "METHOD_NOT_ALLOWED", f"the line does not allow {body.repayment_method}"
        )
    if (
        not product.term_months_min
        <= body.term_months
        <= min(product.term_months_max, line["max_term_months"])
    ):
        raise Unprocessable(
            "TERM_NOT_ALLOWED",
            f"term_months must be within {product.term_months_min}.."
            f"{min(product.term_months_max, line['max_term_months'])}",
        )
    if body.repayment_method == "bullet" and body.term_months > product.bullet_term_months_max:
        raise Unprocessable(
            "BULLET_TERM_TOO_LONG",
            f"a bullet loan may run at most {product.bullet_term_months_max} months",
        )
    if body.grace_months > product.grace_months_max:
        raise Unprocessable(
            "GRACE_NOT_ALLOWED", f"grace_months may be at most {product.grace_months_max}"
        )


async def _check_customer_cap(
    conn: asyncpg.Connection, channel: Channel, product: Product, customer_id: int, amount_fen: int
) -> None:
    if product.customer_cap_group is None or product.customer_outstanding_max_fen is None:
        return
    await lock_customer(conn, channel, customer_id, lock=True)
    outstanding = await conn.fetchval(
        """SELECT coalesce(sum(outstanding_principal_fen), 0)::bigint FROM loan
           WHERE customer_id = $1 AND customer_cap_group = $2
             AND status IN ('disbursing', 'disbursed')""",
        customer_id,
        product.customer_cap_group,
    )
    if outstanding + amount_fen > product.customer_outstanding_max_fen:
        raise Unprocessable(
            "CUSTOMER_CAP_EXCEEDED",
            f"the customer's outstanding principal under {product.customer_cap_group} "
            "may not exceed "
            f"{format_fen(product.customer_outstanding_max_fen)}",
        )


def _parse(body: DrawdownCreate) -> tuple[int, str]:
    try:
        return parse_amount(body.amount), parse_bank_card(body.disburse_to)
    except MoneyFormatError as exc:
        raise BadRequest(exc.code, exc.detail) from exc
    except IdentityError as exc:
        raise BadRequest(exc.code, exc.detail) from exc


def plan_summary(plan: Plan) -> PlanSummary:
    first = plan.installments[0]
    return PlanSummary(
        installments=len(plan.installments),
        first_due_date=first.due_date,
        first_payment=format_fen(first.total_fen),
        maturity_date=plan.installments[-1].due_date,
        total_interest=format_fen(plan.total_interest_fen),
        total_repayment=format_fen(plan.total_fen),
    )


class Draft(msgspec.Struct, frozen=True):
    """A checked drawdown, ready to write: everything the inserts and postings need."""

    channel: Channel
    product: Product
    line: dict[str, Any]
    body: DrawdownCreate
    plan: Plan
    loan_id: int
    receipt_no: str
    card: str
    today: dt.date

    @property
    def customer_id(self) -> int:
        return int(self.line["customer_id"])


async def draw_down_at_once(
    svc: Services, channel: Channel, body: DrawdownCreate, claim: Claim
) -> tuple[DrawdownView, StoredResponse] | AtOnce:
    """The common case in two round trips and one commit, outside any transaction:
    read the line (with its customer's standing and the card's binding), plan, then
    book with whatever else reached the shard meanwhile (`booking_batch`):
    `book_drawdowns` checks under the locks that the read still holds and writes
    everything with the idempotency record. A refusal found in the read is final (it
    is the line's committed state); anything the locks find changed is handed back as
    RECHECK, for `draw_down` to redo."""
    amount_fen, card = _parse(body)
    today = svc.business_date
    line_id = int(body.credit_line_id)
    shard = shard_of_id(line_id)
    index = cards.card_index(svc.cipher, card)
    with svc.bookings.expecting(shard):
        line = await read(svc.pools, shard, lambda c: _line_paying(c, channel, line_id, index))
        return await _book_at_once(
            svc,
            channel,
            body,
            claim,
            line,
            shard=shard,
            amount_fen=amount_fen,
            card=card,
            today=today,
        )


async def _book_at_once(
    svc: Services,
    channel: Channel,
    body: DrawdownCreate,
    claim: Claim,
    line: asyncpg.Record,
    *,
    shard: int,
    amount_fen: int,
    card: str,
    today: dt.date,
) -> tuple[DrawdownView, StoredResponse] | AtOnce:
    """`draw_down_at_once` once the line is read: check, plan, book."""
    await _check_line(svc, line, body, amount_fen=amount_fen, today=today)
    try:
        draft = _draft(svc, channel, body, line, amount_fen=amount_fen, card=card, today=today)
    except Unprocessable:
        # The plan's refusals come after the customer cap's: the locked path orders them.
        return AtOnce.RECHECK
    view = _view(draft)
    response = StoredResponse(201, encode(view))
    idempotency = (claim.channel_id, claim.key, claim.request_sha256, 201, response.body)
    args = (*idempotency, *_book_args(svc, draft), claim.nonce)
    outcome = await svc.bookings.book(shard, args)
    if outcome == "booked":
        return view, response
    return AtOnce(outcome)


async def draw_down(
    svc: Services, conn: asyncpg.Connection, channel: Channel, body: DrawdownCreate
) -> tuple[DrawdownView, int]:
    """Book the drawdown under locks, inside the caller's transaction (the caller
    stores the idempotency record); returns the response and the customer ID."""
    amount_fen, card = _parse(body)
    today = svc.business_date
    line = await _line_paying(
        conn, channel, int(body.credit_line_id), cards.card_index(svc.cipher, card), lock=True
    )
    product = await _check_line(svc, line, body, amount_fen=amount_fen, today=today)
    await _check_customer_cap(conn, channel, product, line["customer_id"], amount_fen)
    draft = _draft(svc, channel, body, line, amount_fen=amount_fen, card=card, today=today)
    no_record = (None, None, None, None, None)  # the caller writes it in this transaction
    outcome = await book_alone(conn, (*no_record, *_book_args(svc, draft), None))
    if outcome != "booked":
        # Our locks hold the line and the customer; only loans of an uncapped product
        # in the same cap group can have moved the sum. Run the whole transaction again.
        raise RetryTransaction(f"the booking answered {outcome} under locks")
    return _view(draft), draft.customer_id


async def _line_paying(
    conn: asyncpg.Connection, channel: Channel, line_id: int, index: bytes, *, lock: bool = False
) -> asyncpg.Record:
    """The line with its customer's standing, if the card to pay is bound to its customer
    (else CARD_NOT_BOUND): one statement."""
    line = await fetch_line(conn, channel, line_id, lock=lock, standing=True, card_index=index)
    cards.refuse_unbound(line["card_bound"])
    return line


async def _check_line(
    svc: Services, line: asyncpg.Record, body: DrawdownCreate, *, amount_fen: int, today: dt.date
) -> Product:
    """The request against the line (raises the refusals); returns the terms of the
    product's version the line was granted under."""
    # A version this process has not loaded yet: reloaded first; failing that, the
    # terms' lookup is a 503 to retry, not a KeyError.
    await svc.reference.catch_up(line["product_code"], line["product_version"])
    reference = svc.reference.data
    product = reference.product_terms(line["product_code"], line["product_version"])
    product_rules.check_active(reference.products.get(line["product_code"], product))
    product_rules.check_term(product, body.term_months)
    id_region, residence = line["regions"] or (None, None)
    product_rules.check_region(reference, line["tenant_id"], product, id_region, residence)
    _check_request(product, line, body, today)
    available_fen = line["limit_fen"] - line["used_fen"]
    if amount_fen > available_fen:
        raise Unprocessable(
            "CREDIT_LINE_EXCEEDED", f"the line has {format_fen(available_fen)} available"
        )
    return product


def _draft(
    svc: Services,
    channel: Channel,
    body: DrawdownCreate,
    line: asyncpg.Record,
    *,
    amount_fen: int,
    card: str,
    today: dt.date,
) -> Draft:
    """Plan the checked drawdown and give it its IDs."""
    product = svc.reference.data.product_terms(line["product_code"], line["product_version"])
    try:
        plan = build_plan(
            amount_fen,
            line["annual_rate_pct"],
            body.term_months,
            body.repayment_method,
            today,
            grace_months=body.grace_months,
        )
    except ScheduleError as exc:
        raise Unprocessable(exc.code, exc.detail) from exc
    loan_id = svc.ids.next_id(shard_of_id(line["customer_id"]))
    receipt_no = f"JJ{today:%Y%m%d}{loan_id:019d}"
    return Draft(channel, product, dict(line), body, plan, loan_id, receipt_no, card, today)


def _view(draft: Draft) -> DrawdownView:
    line = draft.line
    return DrawdownView(
        loan_id=str(draft.loan_id),
        receipt_no=draft.receipt_no,
        status="disbursing",
        credit_line_id=str(line["credit_line_id"]),
        customer_id=str(draft.customer_id),
        product_code=draft.product.product_code,
        principal=format_fen(draft.plan.principal_fen),
        annual_rate_pct=format_rate_pct(line["annual_rate_pct"]),
        repayment_method=draft.body.repayment_method,
        term_months=draft.body.term_months,
        grace_months=draft.body.grace_months,
        start_date=draft.today,
        disburse_to_masked=mask_bank_card(draft.card),
        plan=plan_summary(draft.plan),
    )


def _book_args(svc: Services, draft: Draft) -> tuple[object, ...]:
    """A drawdown's booking arguments after the idempotency record's (5, or NULLs): the
    checks (5), the loan (16), its plan's columns (11), the posting (5) and the payment
    order (2); `book_drawdowns` takes each as an array (ledger migration 0011)."""
    line, plan, product = draft.line, draft.plan, draft.product
    customer_id, shard = draft.customer_id, shard_of_id(draft.customer_id)
    legs = (
        Leg(Code.LOAN_PRINCIPAL, draft.loan_id, plan.principal_fen),
        Leg(Code.DISBURSEMENT_CLEARING, None, -plan.principal_fen),
    )
    txn_id = svc.ids.next_id(shard)
    posting = Posting(txn_id, customer_id, "drawdown", draft.loan_id, draft.today, legs)
    leg_arrays = posting_args(posting)[5:]
    payload = {"reference": disbursement_reference(draft.loan_id)}
    return (
        line["credit_line_id"],
        line["annual_rate_pct"],
        draft.today,
        product.customer_cap_group,
        None if product.customer_cap_group is None else product.customer_outstanding_max_fen,
        draft.loan_id,
        customer_id,
        draft.channel.tenant_id,
        draft.channel.channel_id,
        product.product_code,
        draft.receipt_no,
        plan.principal_fen,
        product.penalty_multiplier,
        draft.body.repayment_method,
        draft.body.term_months,
        draft.body.grace_months,
        plan.terms.start,
        plan.installments[-1].due_date,
        svc.cipher.encrypt(draft.card, context=BANK_CARD, row=draft.loan_id),
        mask_bank_card(draft.card),
        plan.payment_fen,
        *installment_arrays(fresh_state(plan), ()),
        txn_id,
        *leg_arrays,
        svc.ids.next_id(shard),
        msgspec.json.encode(payload).decode(),
    )


def disbursement_reference(loan_id: int) -> str:
    """Our reference of the payment at core: unique per loan, never reused."""
    return f"D{loan_id}"

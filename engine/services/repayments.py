"""Repayments (还款): one request, one or several loans of one customer (合并扣款),
all or nothing, booked only after core banking debited the card.

    phase A (the request's transaction)
        lock the loans in loan-ID order; refuse a loan with a repayment in progress
        per item, on the business date: book overdue charges through the day
        (ledger.overdue.accrue_overdue), then
            due     ─► waterfall over what is due      (ledger.allocation.allocate_due)
            prepay  ─► interest on the prepaid principal, then the plan rule (ledger.prepayment)
            payoff  ─► the payoff quote, settled in full (ledger.allocation.settle_payoff)
        ─► repayment `processing` with the fixed cash per loan ─► outbox: debit the card
    debit  (inline within `inline_debit_wait_s`, else by the relay; unclear: inquiry)
    phase B (`complete_repayment`, one transaction, only from `processing`)
        succeeded ─► the same allocation again on phase A's date (the loans were held)
                     ─► plans, loans, lines (revolving) ─► `succeeded`, one merged SMS
                     ─► last, one posting (its stripe rows held briefly)
                        Dr core_settlement / Cr loan_principal and the loans' receivables
        failed    ─► `failed` with core's reason; nothing booked

Income is booked on the accrual basis (engine/eod): the day-end posts interest and
penalty to each loan's receivables day by day, and a repayment settles them. Charges
this repayment books for its own day (penalty since the last day-end) are posted to the
penalty receivable and income first. A loan the repayment settles leaves the day-end:
both its receivables are zeroed, what was not accrued (or accrued beyond what was paid)
going to income. Interest a prepayment settles on the prepaid principal is earned at
once and counted in the loan's accrual figure (`loan_accrual.interest_extra_fen`).

Loans are locked in ascending ID order and their lines after them, so two
repayments never deadlock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from typing import Final

import asyncpg
import msgspec

from engine.contract.codec import encode
from engine.contract.errors import BadRequest, NotFound, Unprocessable
from engine.contract.messages import (
    Allocation,
    RepaymentCreate,
    RepaymentItemCreate,
    RepaymentItemView,
    RepaymentView,
)
from engine.idempotency.records import AtOnce, Claim, StoredResponse
from engine.runtime import metrics
from engine.security.identity import IdentityError, mask_bank_card, parse_bank_card
from engine.security.pii import PiiCipher
from engine.services import cards
from engine.services import repayment_opening as opening
from engine.services.context import Services
from engine.services.customers import BANK_CARD, lock_customer
from engine.services.loan_store import (
    LOAN_WITH_PLAN_SQL,
    VERSIONS_AND_RECEIVABLES,
    StoredLoan,
    fetch_loan,
    rewrite_plan,
    stored_loan,
)
from engine.services.loans import installment_views
from engine.services.notify import sms_instruction
from engine.services.repayment_opening import Opened
from engine.stores.outbox import Claimed, enqueue, enqueue_many, finish
from engine.stores.reference import Channel, ReferenceData
from engine.stores.shards import read
from ledger import allocation
from ledger.chart import Code
from ledger.money import MoneyFormatError, format_fen, parse_amount
from ledger.overdue import LoanState, accrue_overdue, unpaid_fen
from ledger.postings import Leg, Posting
from ledger.prepayment import PrepaymentRule, payoff_quote, prepay, principal_for_cash_fen
from ledger.schedule import ScheduleError
from ledger.store import post
from sharding.ids import IdGenerator, shard_of_id


class Item(msgspec.Struct, frozen=True):
    """One loan of a repayment, with the cash fixed in phase A."""

    loan_id: int
    mode: str
    prepay_rule: str | None
    amount_fen: int
    penalty_fen: int = 0
    interest_fen: int = 0
    principal_fen: int = 0


class ItemResult(msgspec.Struct, frozen=True):
    item: Item
    loan: StoredLoan  # with its charges booked through the day
    result: allocation.Allocation
    charges_booked_fen: int  # penalty and compound this repayment booked for its day


def debit_reference(repayment_id: int) -> str:
    """Our reference of the debit at core: unique per repayment, never reused."""
    return f"R{repayment_id}"


def _cash(item: RepaymentItemCreate) -> int | None:
    if item.amount is None:
        return None
    try:
        return parse_amount(item.amount)
    except MoneyFormatError as exc:
        raise BadRequest(exc.code, f"loan {item.loan_id}: {exc.detail}") from exc


def _apply(loan: StoredLoan, item: Item, cash_fen: int | None, day: dt.date) -> ItemResult:
    """The allocation of one item on `day` (phase A sizes it, phase B books it)."""
    multiplier = loan.row.penalty_multiplier
    state = accrue_overdue(loan.state, day, multiplier)
    booked_fen = _charges_fen(state) - _charges_fen(loan.state)
    if item.mode == "due":
        due_fen = allocation.due_total_fen(state, day)
        if due_fen == 0:
            raise Unprocessable("NOTHING_DUE", f"nothing is due on loan {item.loan_id}")
        result = allocation.allocate_due(state, day, due_fen if cash_fen is None else cash_fen)
    elif item.mode == "prepay":
        if cash_fen is None:
            raise BadRequest(
                "AMOUNT_REQUIRED", f"loan {item.loan_id}: a prepayment needs an amount"
            )
        rule = item.prepay_rule or PrepaymentRule.REDUCE_NEAREST
        done = prepay(state, day, principal_for_cash_fen(state, day, cash_fen), rule)
        result = allocation.Allocation(0, done.interest_fen, done.principal_fen, done.state, ())
    else:
        quote = payoff_quote(state, day, multiplier)
        if cash_fen is not None and cash_fen != quote.total_fen:
            raise Unprocessable(
                "PAYOFF_AMOUNT_MISMATCH",
                f"loan {item.loan_id}: the payoff on {day} is {format_fen(quote.total_fen)}",
            )
        result = allocation.settle_payoff(state, day, quote)
    loan = msgspec.structs.replace(loan, state=state)
    sized = msgspec.structs.replace(item, amount_fen=result.total_fen)
    return ItemResult(sized, loan, result, booked_fen)


def _charges_fen(state: LoanState) -> int:
    return sum(s.penalty_unpaid_fen + s.compound_unpaid_fen for s in state.statuses)


def _evaluate(loan: StoredLoan, item: Item, cash_fen: int | None, day: dt.date) -> ItemResult:
    if loan.row.status != "disbursed":
        raise Unprocessable("LOAN_NOT_ACTIVE", f"loan {item.loan_id} is {loan.row.status}")
    try:
        return _apply(loan, item, cash_fen, day)
    except (allocation.AllocationError, ScheduleError) as exc:
        raise Unprocessable(exc.code, f"loan {item.loan_id}: {exc.detail}") from exc


async def _locked_loans(
    conn: asyncpg.Connection, channel_tenant: Channel, customer_id: int, loan_ids: list[int]
) -> dict[int, StoredLoan]:
    loans = {}
    for loan_id in sorted(loan_ids):
        loan = await fetch_loan(conn, channel_tenant, loan_id, lock=True)
        if loan.row.customer_id != customer_id:
            raise NotFound("LOAN_NOT_FOUND", f"no loan {loan_id} of this customer")
        loans[loan_id] = loan
    return loans


async def repay(
    svc: Services, conn: asyncpg.Connection, channel: Channel, body: RepaymentCreate, key: str
) -> RepaymentView:
    """Phase A of a channel's repayment, on the business date."""
    return await open_repayment(
        conn,
        ids=svc.ids,
        cipher=svc.cipher,
        reference=svc.reference.data,
        channel=channel,
        body=body,
        key=key,
        today=svc.business_date,
    )


async def open_repayment(
    conn: asyncpg.Connection,
    *,
    ids: IdGenerator,
    cipher: PiiCipher,
    reference: ReferenceData,
    channel: Channel,
    body: RepaymentCreate,
    key: str,
    today: dt.date,
) -> RepaymentView:
    """Phase A: check and size every item on `today`, hold the loans, queue the debit.
    The day-end's auto-deduction comes here too, with the date it closes."""
    customer_id = int(body.customer_id)
    card, loan_ids = _checked_request(body)
    await lock_customer(conn, channel, customer_id)
    await cards.require_bound(conn, customer_id, cards.card_index(cipher, card))
    loans = await _locked_loans(conn, channel, customer_id, loan_ids)
    versions = await _granted_versions(conn, loan_ids) if _prepays(body) else {}
    items = _sized_items(reference, body, loans, today, versions)
    repayment_id = ids.next_id(shard_of_id(customer_id))
    total_fen = sum(item.amount_fen for item in items)
    await conn.execute(
        """INSERT INTO repayment (repayment_id, customer_id, tenant_id, channel_id, status,
               total_fen, debit_from_masked, debit_from_ciphertext, business_date,
               request_items, channel_key)
           VALUES ($1, $2, $3, $4, 'processing', $5, $6, $7, $8, $9::jsonb, $10)""",
        repayment_id,
        customer_id,
        channel.tenant_id,
        channel.channel_id,
        total_fen,
        mask_bank_card(card),
        cipher.encrypt(card, context=BANK_CARD, row=repayment_id),
        today,
        msgspec.json.encode(items).decode(),
        key,
    )
    await conn.execute(
        "UPDATE loan SET pending_repayment_id = $2 WHERE loan_id = ANY($1::bigint[])",
        loan_ids,
        repayment_id,
    )
    await enqueue(
        conn,
        outbox_id=ids.next_id(shard_of_id(customer_id)),
        customer_id=customer_id,
        kind="debit",
        ref_id=repayment_id,
        amount_fen=total_fen,
        payload={"reference": debit_reference(repayment_id)},
    )
    # The answer from what this transaction holds: the loans as locked (phase A changes
    # none of what the view shows), the items as stored.
    return _view(
        repayment_id,
        customer_id=customer_id,
        status="processing",
        total_fen=total_fen,
        business_date=today,
        debit_from_masked=mask_bank_card(card),
        failure_reason=None,
        items=[_item_view(item, loans[item.loan_id], today) for item in items],
    )


def _checked_request(body: RepaymentCreate) -> tuple[str, list[int]]:
    """The card and the loan IDs, with the refusals that need no database."""
    try:
        card = parse_bank_card(body.debit_from)
    except IdentityError as exc:
        raise BadRequest(exc.code, exc.detail) from exc
    for wanted in body.items:
        if wanted.mode != "prepay" and wanted.prepay_rule is not None:
            raise BadRequest("PREPAY_RULE_NOT_APPLICABLE", "prepay_rule is only for mode prepay")
    loan_ids = [int(item.loan_id) for item in body.items]
    if len(set(loan_ids)) != len(loan_ids):
        raise BadRequest("LOAN_REPEATED", "each loan may appear once in a repayment")
    return card, loan_ids


def _prepays(body: RepaymentCreate) -> bool:
    return any(item.mode == "prepay" for item in body.items)


async def _granted_versions(conn: asyncpg.Connection, loan_ids: list[int]) -> dict[int, int]:
    """Each loan's product version: its line's, the one the line was granted under."""
    rows = await conn.fetch(
        """SELECT l.loan_id, c.product_version FROM loan l
           JOIN credit_line c ON c.credit_line_id = l.credit_line_id
           WHERE l.loan_id = ANY($1::bigint[])""",
        loan_ids,
    )
    return {r["loan_id"]: r["product_version"] for r in rows}


def _prepay_rule(
    reference: ReferenceData, loan: StoredLoan, asked: str | None, versions: Mapping[int, int]
) -> str:
    """The channel's rule, else the product's default, both of the version the loan was
    granted under (`versions`: loan -> version); a rule that version does not allow is
    refused."""
    version = versions[loan.row.loan_id]
    terms = reference.product_terms(loan.row.product_code, version)
    rule = asked or terms.prepay_rule_default
    if rule not in terms.prepay_rules:
        raise Unprocessable(
            "PREPAY_RULE_NOT_ALLOWED",
            f"loan {loan.row.loan_id}: product {loan.row.product_code} (version {version}) "
            f"allows prepayment rules {', '.join(terms.prepay_rules)}, not {rule}",
        )
    return rule


def _sized_items(
    reference: ReferenceData,
    body: RepaymentCreate,
    loans: dict[int, StoredLoan],
    today: dt.date,
    versions: Mapping[int, int],
) -> list[Item]:
    """Every item checked and sized on `today` (raises the refusals). `versions`: each
    loan's granted product version, needed for prepayments only."""
    busy = [str(i) for i, loan in loans.items() if loan.row.pending_repayment_id is not None]
    if busy:
        raise Unprocessable(
            "REPAYMENT_IN_PROGRESS", f"loans {', '.join(busy)} have a repayment in progress"
        )
    results = []
    for request_item in body.items:
        loan = loans[int(request_item.loan_id)]
        rule = None
        if request_item.mode == "prepay":
            rule = _prepay_rule(reference, loan, request_item.prepay_rule, versions)
        item = Item(loan.row.loan_id, request_item.mode, rule, 0)
        results.append(_evaluate(loan, item, _cash(request_item), today))
    return [_sized(r) for r in results]


# Phase A's read for `open_at_once`: the customer's tenant, whether the card is bound,
# the loans with their plans, row versions and receivables (for phase B's inline
# completion), and each loan's granted product version (its prepayment rules), in one
# query and without locks (a line's version never changes).
_OPEN_READ_HEAD: Final = LOAN_WITH_PLAN_SQL.replace(
    "SELECT ",
    """SELECT (SELECT tenant_id FROM customer WHERE customer_id = $1) AS c_tenant_id,
       EXISTS (SELECT 1 FROM customer_card WHERE customer_id = $1 AND card_index = $2)
           AS c_card_bound,
       (SELECT product_version FROM credit_line c WHERE c.credit_line_id = loan.credit_line_id)
           AS line_product_version,
       """
    + VERSIONS_AND_RECEIVABLES,
    1,
)


@functools.cache
def _open_read_sql(loans: int) -> str:
    """The read for `loans` loans, each ID a parameter of its own. With the IDs as one
    array parameter PostgreSQL planned the query again on every call (its generic plan
    assumes ten elements, so it never looks cheaper than a plan for the one loan sent):
    0.5 ms of planning for a 0.1 ms read. A fixed number of scalars has a generic plan
    as cheap as the custom ones, which the server keeps after five calls. One statement
    per number of loans (a repayment has at most 20)."""
    ids = ", ".join(f"${n}::bigint" for n in range(3, 3 + loans))
    return f"{_OPEN_READ_HEAD} WHERE loan.loan_id IN ({ids}) ORDER BY loan.loan_id"


async def open_at_once(
    svc: Services,
    channel: Channel,
    body: RepaymentCreate,
    claim: Claim,
    created: list[int],
    *,
    lease_s: float | None = None,
    opened: list[Opened] | None = None,
) -> StoredResponse | AtOnce:
    """Phase A in two round trips, outside any transaction (the idempotency runner's
    `at_once`): read, size in Python as `open_repayment` does, then `open_repayments`
    (ledger migration 0022), shared with the openings that reach the shard database
    meanwhile (`svc.openings`), checks under the loans' locks that nothing it rested on
    changed and writes it all with the durable record. With `lease_s` the debit's
    outbox row is written claimed for the request's inline debit, which finds it in
    `opened`. A refusal of the request or of its sizing is raised from the read (the
    runner replays the key's record first, if any). Anything else this path cannot
    tell (a customer, card or loan that does not match, a changed loan, a replayed
    nonce, a call that failed) is RECHECK: the locked path redoes it and names why."""
    card, loan_ids = _checked_request(body)
    customer_id = int(body.customer_id)
    logical = shard_of_id(customer_id)
    lanes = svc.openings
    with lanes.expecting(logical) if lanes is not None else contextlib.nullcontext():
        prepared = await _prepare_opening(
            svc, channel, body, claim, card=card, loan_ids=loan_ids, lease_s=lease_s
        )
        if prepared is None:
            return AtOnce.RECHECK
        args, response, repayment_id, records = prepared
        try:
            if lanes is not None:  # a group call that fails answers "recheck" for each
                outcome = await lanes.book(logical, args)
            else:
                outcome = await read(svc.pools, logical, lambda c: opening.alone(c, args))
        except asyncpg.UniqueViolationError:
            # A nonce seen before, in a call made alone (no lanes, or lanes of batch size
            # 1, which call at once): the locked path refuses it and names why.
            return AtOnce.RECHECK
    booked = opening.booked_of(outcome)
    if booked is None:
        return AtOnce(outcome)
    created.append(repayment_id)
    metrics.REPAYMENT_OPENED.labels("at_once").inc()
    if lease_s is not None and opened is not None:
        opened.append(opening.claimed_debit(args, booked, [dict(r) for r in records]))
    return response


async def _prepare_opening(
    svc: Services,
    channel: Channel,
    body: RepaymentCreate,
    claim: Claim,
    *,
    card: str,
    loan_ids: list[int],
    lease_s: float | None,
) -> tuple[tuple[object, ...], StoredResponse, int, list[asyncpg.Record]] | None:
    """The read, the sizing and `open_repayments`' arguments for one opening (None:
    the locked path must find out why not). Raises the sizing's refusals."""
    customer_id = int(body.customer_id)
    logical = shard_of_id(customer_id)
    index = cards.card_index(svc.cipher, card)
    records = await read(
        svc.pools,
        logical,
        lambda c: c.fetch(_open_read_sql(len(loan_ids)), customer_id, index, *loan_ids),
    )
    if (
        len(records) != len(loan_ids)
        or records[0]["c_tenant_id"] != channel.tenant_id
        or not records[0]["c_card_bound"]
    ):
        return None
    loans = {record["loan_id"]: stored_loan(record) for record in records}
    if any(
        loan.row.customer_id != customer_id or loan.row.tenant_id != channel.tenant_id
        for loan in loans.values()
    ):
        return None
    repayment_id = svc.ids.next_id(logical)
    # A refusal of the sizing (ARREARS_FIRST, a payoff amount that is not the quote, a
    # loan held by another repayment...) is answered from this read: it is one snapshot
    # of loans this request names, taken while the request ran, so the refusal is as true
    # as the locked path's would be a moment later, and nothing is written either way.
    # The idempotency runner still replays the key's durable record if there is one (a
    # retry of a repayment that went through finds its own loans held or paid).
    for record in records:  # the versions its prepayments' rules come from
        if record["line_product_version"] is not None:
            await svc.reference.catch_up(record["product_code"], record["line_product_version"])
    args, response = opening_args(
        reference=svc.reference.data,
        cipher=svc.cipher,
        channel=channel,
        body=body,
        claim=claim,
        card=card,
        records=records,
        loans=loans,
        today=svc.business_date,
        ids=(repayment_id, svc.ids.next_id(logical)),
        lease_s=lease_s,
    )
    return args, response, repayment_id, records


def opening_args(
    *,
    reference: ReferenceData,
    cipher: PiiCipher,
    channel: Channel,
    body: RepaymentCreate,
    claim: Claim,
    card: str,
    records: Sequence[asyncpg.Record],
    loans: dict[int, StoredLoan],
    today: dt.date,
    ids: tuple[int, int],
    lease_s: float | None,
) -> tuple[tuple[object, ...], StoredResponse]:
    """Phase A sized from an unlocked read (`records`: the loans with their row
    versions, `loans`: the same as loans; `ids`: the repayment's and its debit's outbox
    row's): `open_repayments`' arguments for it and the answer to store. The channel's
    path and the day-end's auto-deduction both come here. Raises the refusals the
    locked path would (the caller lets that path name them)."""
    # The day-end's deduction reads no versions: its items are `due`, never `prepay`.
    versions = {
        r["loan_id"]: r["line_product_version"]
        for r in records
        if r.get("line_product_version") is not None
    }
    items = _sized_items(reference, body, loans, today, versions)
    repayment_id, outbox_id = ids
    customer_id = int(body.customer_id)
    total_fen = sum(item.amount_fen for item in items)
    masked = mask_bank_card(card)
    view = _view(
        repayment_id,
        customer_id=customer_id,
        status="processing",
        total_fen=total_fen,
        business_date=today,
        debit_from_masked=masked,
        failure_reason=None,
        items=[_item_view(item, loans[item.loan_id], today) for item in items],
    )
    response = StoredResponse(201, encode(view))
    args = (
        claim.channel_id,
        claim.key,
        claim.request_sha256,
        response.status,
        response.body,
        claim.nonce,
        repayment_id,
        customer_id,
        channel.tenant_id,
        channel.channel_id,
        total_fen,
        masked,
        cipher.encrypt(card, context=BANK_CARD, row=repayment_id),
        today,
        msgspec.json.encode(items).decode(),
        [(r["loan_id"], r["loan_xmin"], r["plan_xmin"]) for r in records],
        outbox_id,
        msgspec.json.encode({"reference": debit_reference(repayment_id)}).decode(),
        lease_s,
    )
    return args, response


def _sized(r: ItemResult) -> Item:
    return msgspec.structs.replace(
        r.item,
        penalty_fen=r.result.penalty_fen,
        interest_fen=r.result.interest_fen,
        principal_fen=r.result.principal_fen,
    )


async def complete_repayment(
    conn: asyncpg.Connection,
    ids: IdGenerator,
    reference: ReferenceData,
    claimed: Claimed,
    *,
    succeeded: bool,
    outcome: str,
) -> None:
    """Phase B: apply core's definite answer to the debit, once."""
    assert conn.is_in_transaction()
    row = await conn.fetchrow(
        "SELECT * FROM repayment WHERE repayment_id = $1 FOR UPDATE", claimed.ref_id
    )
    assert row is not None, claimed
    if row["status"] != "processing":
        await finish(conn, claimed, "done" if row["status"] == "succeeded" else "failed", outcome)
        return
    items = msgspec.json.decode(row["request_items"], type=list[Item])
    posting: Posting | None = None
    if succeeded:
        posting = await _book(conn, ids, reference, row, items)
    else:
        await conn.execute(
            """UPDATE repayment SET status = 'failed', failure_reason = $2, completed_at = now()
               WHERE repayment_id = $1""",
            row["repayment_id"],
            outcome,
        )
    await conn.execute(
        "UPDATE loan SET pending_repayment_id = NULL WHERE loan_id = ANY($1::bigint[])",
        [item.loan_id for item in items],
    )
    view = await repayment_view(
        conn, row["tenant_id"], row["repayment_id"], reference.business_date
    )
    await conn.execute(
        """UPDATE idempotency_record SET response_body = $3
           WHERE channel_id = $1 AND idem_key = $2""",
        row["channel_id"],
        row["channel_key"],
        encode(view),
    )
    await finish(conn, claimed, "done" if succeeded else "failed", outcome)
    if posting is not None:
        # Last, just before the commit: the internal accounts' stripe rows it locks are
        # shared with every other posting, so they are held for as short a time as can be.
        await post(conn, posting)


async def _book(
    conn: asyncpg.Connection,
    ids: IdGenerator,
    reference: ReferenceData,
    row: asyncpg.Record,
    items: list[Item],
) -> Posting:
    """The loans' side of a successful debit; returns the posting, for the caller to
    write last."""
    day: dt.date = row["business_date"]
    tenant = Channel(
        channel_id=row["channel_id"], tenant_id=row["tenant_id"], secret="", active=True
    )
    loans = await _locked_loans(conn, tenant, row["customer_id"], [item.loan_id for item in items])
    # Then their rows of the accrual sub-ledger, which the day-end's chunks lock (ledger
    # 0023): no accrual lands between the receivables' read below and the commit.
    await conn.execute(
        """SELECT 1 FROM loan_accrual WHERE loan_id = ANY($1::bigint[])
           ORDER BY loan_id FOR NO KEY UPDATE""",
        sorted(loans),
    )
    results = [_evaluate(loans[item.loan_id], item, item.amount_fen, day) for item in items]
    for before, after in zip(items, results, strict=True):
        # The loans were held since phase A: the same cash splits the same way.
        assert _sized(after) == before, (before, after)
    settled = await _store(conn, results)
    receivables = await _receivables(conn, settled)
    await _record_accrual(conn, row["customer_id"], results, receivables)
    posting = _posting(ids, row, results, receivables)
    await _record_items(conn, row, results)
    await conn.execute(
        "UPDATE repayment SET status = 'succeeded', completed_at = now() WHERE repayment_id = $1",
        row["repayment_id"],
    )
    sms = sms_instruction(
        ids,
        reference,
        tenant_id=row["tenant_id"],
        customer_id=row["customer_id"],
        ref_id=row["repayment_id"],
        kind="repayment",
        fields={
            "channel": reference.channel_name(row["channel_id"]),
            "amount": format_fen(row["total_fen"]),
            "card_last4": row["debit_from_masked"][-4:],
            "receipt_nos": "、".join(loans[item.loan_id].row.receipt_no for item in items),
        },
    )
    await enqueue_many(conn, [sms])
    return posting


def _settled(result: allocation.Allocation) -> bool:
    plan, statuses = result.state.plan.installments, result.state.statuses
    return not any(unpaid_fen(item, status) for item, status in zip(plan, statuses, strict=True))


def _penalty_paid(r: ItemResult) -> tuple[int, ...]:
    previous, added = r.loan.penalty_paid_fen, r.result.penalty_paid_by_installment
    return tuple(
        (previous[i] if i < len(previous) else 0) + (added[i] if i < len(added) else 0)
        for i in range(len(r.result.state.plan.installments))
    )


async def _store(conn: asyncpg.Connection, results: list[ItemResult]) -> list[int]:
    """Plans, loans and lines after the payment; returns the loans it settles."""
    line_principal: dict[int, int] = {}
    settled_loans: list[int] = []
    for r in results:
        row = r.loan.row
        await rewrite_plan(conn, row, r.result.state, _penalty_paid(r))
        settled = _settled(r.result)
        if settled:
            settled_loans.append(row.loan_id)
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
    return settled_loans


async def _receivables(conn: asyncpg.Connection, loan_ids: list[int]) -> dict[tuple[int, str], int]:
    """The interest and penalty receivables of the loans being settled, before this
    repayment: (loan, code) -> debit balance; the interest one is the sub-ledger's
    (accrued - settled, ledger migration 0023). Read under the locks of the loans' rows of
    the sub-ledger, which the day-end's chunks also take, so no accrual lands
    between this read and the commit."""
    if not loan_ids:
        return {}
    rows = await conn.fetch(
        """SELECT l.loan_id,
                  coalesce((SELECT a.interest_accrued_fen - a.interest_settled_fen
                            FROM loan_accrual a WHERE a.loan_id = l.loan_id), 0) AS interest,
                  coalesce((SELECT a.debit_total_fen - a.credit_total_fen FROM ledger_account a
                            WHERE a.code = $2 AND a.owner_id = l.loan_id), 0) AS penalty
           FROM unnest($1::bigint[]) AS l(loan_id)""",
        loan_ids,
        _PENALTY,
    )
    balances: dict[tuple[int, str], int] = {}
    for row in rows:
        balances[(row["loan_id"], _INTEREST)] = int(row["interest"])
        balances[(row["loan_id"], _PENALTY)] = int(row["penalty"])
    return balances


_INTEREST = str(Code.LOAN_INTEREST_RECEIVABLE)  # the loan's interest receivable (sub-ledger)
_PENALTY = str(Code.LOAN_PENALTY_RECEIVABLE)


def _interest_settled(r: ItemResult, receivables: dict[tuple[int, str], int]) -> int:
    """The interest the repayment settles on the loan's receivable: what it pays, or the
    whole receivable of a loan it settles (`receivables` holds only those)."""
    return receivables.get((r.loan.row.loan_id, _INTEREST), r.result.interest_fen)


async def _record_accrual(
    conn: asyncpg.Connection,
    customer_id: int,
    results: list[ItemResult],
    receivables: dict[tuple[int, str], int],
) -> None:
    """The loans' sub-ledger rows: the interest settled, and the interest a prepayment
    settled on the prepaid principal, earned now and so part of the loan's accrual
    figure from here on (ledger.accrual)."""
    rows = [
        (
            r.item.loan_id,
            customer_id,
            r.result.interest_fen if r.item.mode == "prepay" else 0,
            _interest_settled(r, receivables),
        )
        for r in results
    ]
    rows = [row for row in rows if row[2] > 0 or row[3] != 0]
    if not rows:
        return
    await conn.executemany(
        """INSERT INTO loan_accrual AS a (loan_id, customer_id, interest_extra_fen,
               interest_settled_fen)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (loan_id) DO UPDATE
           SET interest_extra_fen = a.interest_extra_fen + excluded.interest_extra_fen,
               interest_settled_fen = a.interest_settled_fen + excluded.interest_settled_fen""",
        sorted(rows),
    )


def _posting(
    ids: IdGenerator,
    row: asyncpg.Record,
    results: list[ItemResult],
    receivables: dict[tuple[int, str], int],
) -> Posting:
    """Dr core_settlement / Cr each loan's principal and penalty receivable, and the
    accrued-interest control account with the interest settled; the charges booked for
    the day and the income of settled loans' receivables go through income."""
    legs: list[Leg] = []
    interest_income_fen = penalty_income_fen = accrued_fen = 0
    for r in results:
        loan_id = r.loan.row.loan_id
        settled_fen = _interest_settled(r, receivables)
        # A settled loan's receivables are zeroed: the difference from what was paid is
        # income not accrued (a credit) or accrued beyond what was paid.
        interest_income_fen += settled_fen - r.result.interest_fen
        accrued_fen -= settled_fen
        penalty_fen = r.charges_booked_fen - r.result.penalty_fen
        penalty_income_fen -= r.charges_booked_fen
        if (loan_id, _PENALTY) in receivables:
            penalty_before = receivables[(loan_id, _PENALTY)]
            penalty_income_fen += penalty_before + penalty_fen
            penalty_fen = -penalty_before
        if r.result.principal_fen:
            legs.append(Leg(Code.LOAN_PRINCIPAL, loan_id, -r.result.principal_fen))
        if penalty_fen:
            legs.append(Leg(Code.LOAN_PENALTY_RECEIVABLE, loan_id, penalty_fen))
    if accrued_fen:
        legs.append(Leg(Code.ACCRUED_INTEREST_RECEIVABLE, None, accrued_fen))
    if interest_income_fen:
        legs.append(Leg(Code.INTEREST_INCOME, None, interest_income_fen))
    if penalty_income_fen:
        legs.append(Leg(Code.PENALTY_INCOME, None, penalty_income_fen))
    total_fen = -sum(leg.amount_fen for leg in legs)
    assert total_fen == row["total_fen"], (total_fen, row["total_fen"])
    legs.insert(0, Leg(Code.CORE_SETTLEMENT, None, total_fen))
    customer_id = row["customer_id"]
    return Posting(
        txn_id=ids.next_id(shard_of_id(customer_id)),
        customer_id=customer_id,
        kind="repayment",
        ref_id=row["repayment_id"],
        business_date=row["business_date"],
        legs=tuple(legs),
    )


async def _record_items(
    conn: asyncpg.Connection, row: asyncpg.Record, results: list[ItemResult]
) -> None:
    await conn.executemany(
        """INSERT INTO repayment_item (repayment_id, loan_id, customer_id, mode, prepay_rule,
               amount_fen, penalty_fen, interest_fen, principal_fen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        [
            (
                row["repayment_id"],
                r.item.loan_id,
                row["customer_id"],
                r.item.mode,
                r.item.prepay_rule if r.item.mode == "prepay" else None,
                r.result.total_fen,
                r.result.penalty_fen,
                r.result.interest_fen,
                r.result.principal_fen,
            )
            for r in results
        ],
    )


async def repayment_view(
    conn: asyncpg.Connection, tenant_id: str, repayment_id: int, today: dt.date
) -> RepaymentView:
    """The repayment as the API shows it: each loan's allocation and its plan now."""
    row = await conn.fetchrow("SELECT * FROM repayment WHERE repayment_id = $1", repayment_id)
    if row is None or row["tenant_id"] != tenant_id:
        raise NotFound("REPAYMENT_NOT_FOUND", f"no repayment {repayment_id}")
    items = msgspec.json.decode(row["request_items"], type=list[Item])
    tenant = Channel(channel_id=row["channel_id"], tenant_id=tenant_id, secret="", active=True)
    views = []
    for item in items:
        loan = await fetch_loan(conn, tenant, item.loan_id)
        views.append(_item_view(item, loan, today))
    return _view(
        repayment_id,
        customer_id=row["customer_id"],
        status=row["status"],
        total_fen=row["total_fen"],
        business_date=row["business_date"],
        debit_from_masked=row["debit_from_masked"],
        failure_reason=row["failure_reason"],
        items=views,
    )


def _view(
    repayment_id: int,
    *,
    customer_id: int,
    status: str,
    total_fen: int,
    business_date: dt.date,
    debit_from_masked: str,
    failure_reason: str | None,
    items: list[RepaymentItemView],
) -> RepaymentView:
    return RepaymentView(
        repayment_id=str(repayment_id),
        customer_id=str(customer_id),
        status=status,
        total=format_fen(total_fen),
        business_date=business_date,
        debit_from_masked=debit_from_masked,
        items=items,
        failure_reason=failure_reason,
    )


def _item_view(item: Item, loan: StoredLoan, today: dt.date) -> RepaymentItemView:
    return RepaymentItemView(
        loan_id=str(item.loan_id),
        mode=item.mode,
        prepay_rule=(item.prepay_rule or PrepaymentRule.REDUCE_NEAREST)
        if item.mode == "prepay"
        else None,
        amount=format_fen(item.amount_fen),
        allocation=Allocation(
            penalty=format_fen(item.penalty_fen),
            interest=format_fen(item.interest_fen),
            principal=format_fen(item.principal_fen),
        ),
        loan_status=loan.row.status,
        outstanding_principal=format_fen(loan.row.outstanding_principal_fen),
        plan=installment_views(loan, today),
    )

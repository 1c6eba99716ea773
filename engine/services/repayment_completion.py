"""Phase B of a repayment at once: one read, the allocation in Python, one group call.

    core took the debit ─► expecting(shard):
        read the repayment, its loans with their plans and receivables (one query, no lock)
        ─► the allocation again on phase A's date, exactly as `complete_repayment`
           computes it (`repayments._evaluate`, `_posting`, ...; the ledger package's
           money arithmetic, nothing of its own)
        ─► plans, loans, lines, items, status, SMS, answer, outbox, posting as arrays
        ─► book(shard, args): `complete_repayments` (ledger migration 0018) with the
           repayments of the shard database that came meanwhile (`booking_batch` lanes)
    "booked": done, the answer is the body built here.  Anything else ("recheck": the
    repayment or a loan changed since the read, a call that failed whole, a lock held
    past 250 ms): the caller completes it alone, under locks (`complete_repayment`).

A debit core refused takes the single path (rare, and it writes little).
`repayment_batch_max` 1 books each completion alone through the same function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import asyncpg
import msgspec

from engine.contract.codec import encode
from engine.runtime import metrics
from engine.services import repayments as rp
from engine.services.booking_batch import (
    BATCH_MAX,
    GATHER_S,
    IN_FLIGHT,
    Args,
    GroupBatches,
    GroupKind,
    array_literal,
    flattened_rows,
    item_columns,
)
from engine.services.loan_store import (
    LOAN_WITH_PLAN_SQL,
    VERSIONS_AND_RECEIVABLES,
    StoredLoan,
    installment_arrays,
    stored_loan,
)
from engine.services.notify import sms_payload, sms_text
from engine.stores.outbox import Claimed
from engine.stores.reference import ReferenceData
from engine.stores.shards import read
from ledger.chart import Code
from ledger.money import format_fen
from ledger.store import posting_args
from sharding.ids import IdGenerator, shard_of_id
from sharding.pools import ShardPools

# The repayment's own columns beside each of its loans (prefixed: the loan has some of
# the same names), the row versions the group call compares, and the receivables.
READ_SQL: Final = (
    LOAN_WITH_PLAN_SQL.replace(
        "SELECT ",
        """SELECT r.repayment_id AS r_repayment_id, r.customer_id AS r_customer_id,
       r.tenant_id AS r_tenant_id, r.channel_id AS r_channel_id, r.status AS r_status,
       r.total_fen AS r_total_fen, r.debit_from_masked AS r_debit_from_masked,
       r.business_date AS r_business_date, r.request_items AS r_request_items,
       r.channel_key AS r_channel_key,
       """
        + VERSIONS_AND_RECEIVABLES,
        1,
    ).replace(
        " FROM loan JOIN",
        """ FROM repayment r CROSS JOIN LATERAL jsonb_array_elements(r.request_items) e
    JOIN loan ON loan.loan_id = (e ->> 'loan_id')::bigint
    JOIN""",
        1,
    )
    + " WHERE r.repayment_id = $1 ORDER BY loan.loan_id"
)
# The same read for several repayments at once (the debits of one core call): one
# statement instead of one each.
READ_MANY_SQL: Final = READ_SQL.replace(
    " WHERE r.repayment_id = $1 ORDER BY loan.loan_id",
    " WHERE r.repayment_id = ANY($1::bigint[]) ORDER BY r.repayment_id, loan.loan_id",
)
assert READ_MANY_SQL != READ_SQL

# One repayment's arguments (`GroupKind.args`): its scalars, then its loans' rows, then
# its posting's leg columns.
_R_ID, _CUSTOMER, _DATE = 0, 1, 2
_SCALARS: Final = 11  # id, customer, date, outbox id, attempts, outcome, channel, key,
# body, SMS outbox id, SMS payload
_TXN, _LOANS, _LEGS = 11, 12, 13
ARGS: Final = 14
_LOAN_COLUMNS: Final = 28  # p_loan_id .. p_interest_extra_fen (p_loan_r before them)
# The scalars, p_loan_r, the loans' columns, p_txn_id, the five leg columns, the lock
# time-out.
BATCH_SQL: Final = "SELECT complete_repayments({})".format(
    ", ".join(f"${n}" for n in range(1, _SCALARS + 1 + _LOAN_COLUMNS + 1 + 5 + 1 + 1))
)


class Repayments(GroupKind):
    name = "repayment"
    args = ARGS
    batch_size = metrics.REPAYMENT_BATCH
    batch_failures = metrics.REPAYMENT_BATCH_FAILED

    def keys(self, args: Args) -> tuple[object, tuple[object, ...]]:
        return args[_DATE], (args[_R_ID],)

    async def call(
        self, conn: asyncpg.Connection, items: Sequence[Args], lock_timeout: str | None
    ) -> object:
        return await conn.fetchval(BATCH_SQL, *batch_args(items, lock_timeout))


REPAYMENTS: Final = Repayments()


class RepaymentBatches(GroupBatches):
    """The repayments' completion lanes (one per shard database, per process)."""

    def __init__(
        self,
        pools: ShardPools,
        batch_max: int = BATCH_MAX,
        gather_s: float = GATHER_S,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        super().__init__(pools, REPAYMENTS, batch_max, gather_s, in_flight)


def batch_args(items: Sequence[Args], lock_timeout: str | None) -> list[object]:
    """`complete_repayments`' arguments: each scalar as an array but the business date,
    the loans flattened (each naming its repayment's index, from 1), the plans' columns
    as array literals, the legs flattened (each naming its transaction)."""
    out = item_columns(items, _SCALARS, _DATE)
    out.extend(flattened_rows(items, _LOANS, _LOAN_COLUMNS))
    out.append([item[_TXN] for item in items])
    legs: tuple[list[object], ...] = ([], [], [], [], [])
    for item in items:
        columns = cast("tuple[list[object], ...]", item[_LEGS])  # codes, owners, ...
        legs[0].extend([item[_TXN]] * len(columns[0]))
        for column, values in zip(legs[1:], columns, strict=True):
            column.extend(values)
    out.extend(legs)
    out.append(lock_timeout)
    return out


class Prepared(msgspec.Struct, frozen=True):
    """A completion worked out from one read: the group call's arguments and the
    answer the idempotency record will hold."""

    args: Args
    body: bytes


def prepare(
    records: Sequence[Mapping[str, Any]],
    *,
    ids: IdGenerator,
    reference: ReferenceData,
    claimed: Claimed,
    outcome: str,
) -> Prepared | None:
    """Phase B's writes from the read, as `complete_repayment` would make them; None
    when this path cannot tell (the locked path then finds out and says why)."""
    if not records or records[0]["r_status"] != "processing":
        return None
    head = records[0]
    customer_id: int = head["r_customer_id"]
    day = head["r_business_date"]
    items = msgspec.json.decode(head["r_request_items"], type=list[rp.Item])
    loans = {record["loan_id"]: stored_loan(record) for record in records}
    by_id = {record["loan_id"]: record for record in records}
    if sorted(loans) != sorted(item.loan_id for item in items) or any(
        loan.row.customer_id != customer_id or loan.row.tenant_id != head["r_tenant_id"]
        for loan in loans.values()
    ):
        return None
    try:
        results = [rp._evaluate(loans[item.loan_id], item, item.amount_fen, day) for item in items]
    except Exception:  # a refusal now is the locked path's to raise and explain
        return None
    if any(rp._sized(after) != before for before, after in zip(items, results, strict=True)):
        return None
    settled = [r.item.loan_id for r in results if rp._settled(r.result)]
    receivables = {
        (loan_id, str(code)): int(by_id[loan_id][column])
        for loan_id in settled
        for code, column in (
            (Code.LOAN_INTEREST_RECEIVABLE, "interest_recv"),
            (Code.LOAN_PENALTY_RECEIVABLE, "penalty_recv"),
        )
    }
    row = {
        "repayment_id": head["r_repayment_id"],
        "customer_id": customer_id,
        "total_fen": head["r_total_fen"],
        "business_date": day,
    }
    posting = rp._posting(ids, row, results, receivables)  # type: ignore[arg-type]
    legs = posting_args(posting)[5:]
    after: dict[int, StoredLoan] = {}
    loan_rows: list[tuple[object, ...]] = []
    for r in results:
        loan = r.loan
        paid = rp._penalty_paid(r)
        is_settled = r.item.loan_id in settled
        bump = 0 if r.item.mode == "due" else 1
        record = by_id[r.item.loan_id]
        plan = installment_arrays(r.result.state, paid)
        loan_rows.append(
            (
                loan.row.loan_id,
                record["loan_xmin"],
                record["plan_xmin"],
                int(record["interest_recv"]),
                int(record["penalty_recv"]),
                loan.row.credit_line_id,
                r.result.principal_fen,
                r.result.state.plan.payment_fen,
                r.result.state.plan.prepaid_fen,
                bump,
                is_settled,
                *(array_literal(column) for column in plan),
                r.item.mode,
                r.item.prepay_rule if r.item.mode == "prepay" else None,
                r.result.total_fen,
                r.result.penalty_fen,
                r.result.interest_fen,
                r.result.interest_fen if r.item.mode == "prepay" else 0,
            )
        )
        after[r.item.loan_id] = StoredLoan(
            msgspec.structs.replace(
                loan.row,
                outstanding_principal_fen=loan.row.outstanding_principal_fen
                - r.result.principal_fen,
                payment_fen=r.result.state.plan.payment_fen,
                prepaid_fen=r.result.state.plan.prepaid_fen,
                plan_version=loan.row.plan_version + bump,
                status="settled" if is_settled else loan.row.status,
                pending_repayment_id=None,
            ),
            r.result.state,
            paid,
        )
    view = rp._view(
        head["r_repayment_id"],
        customer_id=customer_id,
        status="succeeded",
        total_fen=head["r_total_fen"],
        business_date=day,
        debit_from_masked=head["r_debit_from_masked"],
        failure_reason=None,
        items=[rp._item_view(item, after[item.loan_id], reference.business_date) for item in items],
    )
    body = encode(view)
    text = sms_text(
        reference,
        tenant_id=head["r_tenant_id"],
        kind="repayment",
        fields={
            "channel": reference.channel_name(head["r_channel_id"]),
            "amount": format_fen(head["r_total_fen"]),
            "card_last4": head["r_debit_from_masked"][-4:],
            "receipt_nos": "、".join(loans[item.loan_id].row.receipt_no for item in items),
        },
    )
    shard = shard_of_id(customer_id)
    args: Args = (
        head["r_repayment_id"],
        customer_id,
        day,
        claimed.outbox_id,
        claimed.attempts,
        outcome,
        head["r_channel_id"],
        head["r_channel_key"],
        body,
        ids.next_id(shard),
        sms_payload("repayment", text),
        posting.txn_id,
        loan_rows,
        legs,
    )
    return Prepared(args, body)


async def read_many(
    conn: asyncpg.Connection, repayment_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Phase B's read of several repayments, by repayment: what `complete_at_once`
    takes as `known` (its group call checks the row versions all the same)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for record in await conn.fetch(READ_MANY_SQL, list(repayment_ids)):
        found.setdefault(record["r_repayment_id"], []).append(dict(record))
    return found


async def complete_at_once(
    pools: ShardPools,
    *,
    batches: RepaymentBatches,
    ids: IdGenerator,
    reference: ReferenceData,
    claimed: Claimed,
    outcome: str,
    known: Sequence[Mapping[str, Any]] = (),
) -> bytes | None:
    """Phase B of a debit core took, with the other completions reaching the shard
    database meanwhile: the stored answer, or None if the locked path must do it.
    `known`: what the read would return, as the request's own phase A left it (its
    inline debit): then nothing is read; the group call checks it all the same."""
    logical = shard_of_id(claimed.customer_id)
    with batches.expecting(logical):
        records = known or [
            dict(r) for r in await read(pools, logical, lambda c: c.fetch(READ_SQL, claimed.ref_id))
        ]
        prepared = prepare(records, ids=ids, reference=reference, claimed=claimed, outcome=outcome)
        if prepared is None:
            return None
        answer = await batches.book(logical, prepared.args)
    if answer != "booked":
        return None
    metrics.REPAYMENT_COMPLETED.labels("at_once").inc()
    return prepared.body

"""Step `deduct`: auto-deduction (自动扣款) — for every customer with anything due on or
before the day, one combined debit of the card on file for all their loans due, on
the day's value date: exactly the path of `POST /v1/repayments` with mode `due` (phase
A here, the debit and its completion by the relay, one merged SMS).

A chunk of customers is one transaction of three round trips, whatever its size: one
read of every due loan of the chunk with its plan and row versions (no locks), the
repayments sized in Python exactly as the channel's path sizes them, then one call of
`open_repayments` (ledger migration 0022, the channel's grouped phase A) for all of
them: under the loans' locks it writes each repayment, its durable record and its
debit's outbox row (pending, for the relay) only if its loans are still the rows read. A
customer it could not open that way (a loan changed or held meanwhile, a refusal) goes
through the locked path alone, in a savepoint, which names the refusal; the rest of
the chunk goes on.

Each customer's repayment is recorded under the idempotency key
`autodebit:<day>:<customer>:<part>` of the system channel `eod`, in the chunk's
transaction with its checkpoint: a chunk redone after a crash finds it and makes no
second debit. A failed debit leaves the installment due: tomorrow it is overdue, and
tomorrow's day-end tries again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable
from itertools import groupby
from typing import Final

import asyncpg
import msgspec

from engine.contract.codec import encode
from engine.contract.errors import ApiError
from engine.contract.messages import RepaymentCreate, RepaymentItemCreate
from engine.eod import keys, progress
from engine.eod.context import EodContext
from engine.idempotency.records import Claim, StoredResponse, find_durable, request_digest
from engine.idempotency.records import store_durable as record
from engine.runtime import metrics
from engine.services.cards import card_index
from engine.services.customers import BANK_CARD
from engine.services.loan_store import LOAN_WITH_PLAN_SQL, stored_loan
from engine.services.repayment_opening import OPENINGS
from engine.services.repayments import open_repayment, opening_args
from engine.stores.reference import Channel

log = logging.getLogger(__name__)

STEP = "deduct"
SYSTEM_CHANNEL = "eod"
ITEMS_MAX = 20  # a repayment's items (API.md); a customer with more gets several
DUE_SQL = """SELECT DISTINCT l.customer_id FROM loan_plan p JOIN loan l ON l.loan_id = p.loan_id
             WHERE p.next_due_date <= $1 AND l.status = 'disbursed' AND l.customer_id > $2
             ORDER BY l.customer_id LIMIT $3"""
# Every loan due of the chunk's customers, free of any repayment, with its plan, its
# row versions, and its customer's tenant, card on file and bound cards' indexes.
_DUE_LOANS_SQL: Final = (
    LOAN_WITH_PLAN_SQL.replace(
        "SELECT ",
        """SELECT c.tenant_id AS c_tenant_id, c.bank_card_ciphertext AS c_card,
       ARRAY(SELECT card_index FROM customer_card k WHERE k.customer_id = c.customer_id)
           AS c_card_indexes,
       loan.xmin::text AS loan_xmin, p.xmin::text AS plan_xmin, """,
        1,
    )
    + """ JOIN customer c ON c.customer_id = loan.customer_id
         WHERE loan.customer_id = ANY($1::bigint[]) AND loan.status = 'disbursed'
           AND p.next_due_date <= $2 AND loan.pending_repayment_id IS NULL
         ORDER BY loan.customer_id, loan.loan_id"""
)


class _Opening(msgspec.Struct, frozen=True):
    """One repayment of the chunk: sized and ready for `open_repayments`, or (args
    empty) left to the locked path."""

    customer: asyncpg.Record
    part: int
    loan_ids: list[int]
    args: tuple[object, ...] = ()

    @property
    def key(self) -> tuple[int, int]:
        return (self.customer["customer_id"], self.part)


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, DUE_SQL, (day,), after, ctx.settings.deduct_chunk)


_IN_FLIGHT_SQL: Final = """SELECT count(*) FROM (SELECT 1 FROM outbox
                              WHERE done_at IS NULL AND kind = 'debit' LIMIT $1) o"""
IN_FLIGHT_POLL_S: Final = 0.2
IN_FLIGHT_LOG_S: Final = 30.0


async def before_chunk(conn: asyncpg.Connection, ctx: EodContext) -> None:
    """Wait while the shard database has `eod.deduct_in_flight_max` debits or more not
    yet finished: the relay works them off at its own pace, and a relay that is down
    stops the deduction here instead of under a pile of debits (logged every 30 s)."""
    limit = ctx.settings.deduct_in_flight_max
    polls = 0
    while await conn.fetchval(_IN_FLIGHT_SQL, limit) >= limit:
        # Waiting a moment is how a full-speed deduction is paced (the metric counts it);
        # only a wait of 30 s, a relay that is down or stuck, is worth a warning.
        if polls and polls % round(IN_FLIGHT_LOG_S / IN_FLIGHT_POLL_S) == 0:
            log.warning(
                "auto-deduction waits for the relay",
                extra={
                    "shard": ctx.shard,
                    "in_flight_max": limit,
                    "waited_s": round(polls * IN_FLIGHT_POLL_S),
                },
            )
        await asyncio.sleep(IN_FLIGHT_POLL_S)
        polls += 1
        metrics.EOD_RELAY_WAIT.labels(ctx.shard).inc(IN_FLIGHT_POLL_S)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, customer_ids: list[int]
) -> int:
    """One repayment (or a few) per customer of the chunk; returns how many were opened."""
    opened = 0
    async with conn.transaction():
        records = await conn.fetch(_DUE_LOANS_SQL, customer_ids, day)
        openings = [
            opening
            for _, loans in groupby(records, key=lambda r: r["customer_id"])
            for opening in _openings(ctx, day, list(loans))
        ]
        sized = [o for o in openings if o.args]
        outcomes = await _open_many(conn, sized)
        for opening in openings:
            outcome = outcomes.get(opening.key)
            if outcome == "booked":
                opened += 1
            elif outcome != "replay":  # not sized, or changed since the read
                opened += await _open_locked(conn, ctx, day, opening)
        await progress.advance(
            conn, day, STEP, start=after, last=customer_ids[-1], rows=len(customer_ids)
        )
    return opened


def _openings(ctx: EodContext, day: dt.date, records: list[asyncpg.Record]) -> Iterable[_Opening]:
    """A customer's repayments of up to `ITEMS_MAX` loans each, sized where they can be."""
    customer = records[0]
    customer_id = customer["customer_id"]
    card = ctx.cipher.decrypt(customer["c_card"], context=BANK_CARD, row=customer_id)
    bound = card_index(ctx.cipher, card) in customer["c_card_indexes"]
    channel = Channel(SYSTEM_CHANNEL, customer["c_tenant_id"], "", True)
    for part, start in enumerate(range(0, len(records), ITEMS_MAX)):
        part_records = records[start : start + ITEMS_MAX]
        loan_ids = [r["loan_id"] for r in part_records]
        opening = _Opening(customer, part, loan_ids)
        if not bound:  # the locked path names the refusal
            yield opening
            continue
        body, claim = _request(day, customer_id, card, loan_ids, part)
        try:
            args, _ = opening_args(
                reference=ctx.reference.data,
                cipher=ctx.cipher,
                channel=channel,
                body=body,
                claim=claim,
                card=card,
                records=part_records,
                loans={r["loan_id"]: stored_loan(r) for r in part_records},
                today=day,
                ids=(ctx.ids.next_id(ctx.logical_shard), ctx.ids.next_id(ctx.logical_shard)),
                lease_s=None,  # the debit's row left pending: the relay sends it
            )
        except ApiError:
            yield opening
            continue
        yield msgspec.structs.replace(opening, args=args)


def _request(
    day: dt.date, customer_id: int, card: str, loan_ids: list[int], part: int
) -> tuple[RepaymentCreate, Claim]:
    """The repayment as a channel would post it, and its claim on the day's key."""
    items = [RepaymentItemCreate(str(i), "due") for i in loan_ids]
    body = RepaymentCreate(str(customer_id), items, card)
    key = f"autodebit:{day}:{customer_id}:{part}"
    return body, Claim(SYSTEM_CHANNEL, key, request_digest("EOD", "/eod/deduct", encode(body)))


async def _open_many(conn: asyncpg.Connection, sized: list[_Opening]) -> dict[tuple[int, int], str]:
    """`open_repayments` for every sized opening, in one call (in a savepoint: should
    it fail, a deadlock say, nothing of it stays and each takes the locked path):
    'booked', 'replay' or 'recheck' by the opening's key."""
    if not sized:
        return {}
    try:
        async with conn.transaction():
            outcomes = await OPENINGS.call(conn, [o.args for o in sized], None)
    except asyncpg.PostgresError as exc:
        log.warning("auto-deduction chunk taken one by one", extra={"error": type(exc).__name__})
        return {}
    assert isinstance(outcomes, list), outcomes
    # "booked <sent at> <xid>" (the inline debit's needs), "replay" or "recheck"
    found = {
        o.key: str(outcome).split(" ", 1)[0] for o, outcome in zip(sized, outcomes, strict=True)
    }
    metrics.REPAYMENT_OPENED.labels("eod_at_once").inc(
        sum(1 for o in found.values() if o == "booked")
    )
    return found


async def _open_locked(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, opening: _Opening
) -> int:
    """The locked path for one repayment, in a savepoint: 1 if opened, 0 if refused
    (logged: a repayment in progress, nothing due any more, the card not bound)."""
    customer = opening.customer
    customer_id = customer["customer_id"]
    card = ctx.cipher.decrypt(customer["c_card"], context=BANK_CARD, row=customer_id)
    body, claim = _request(day, customer_id, card, opening.loan_ids, opening.part)
    channel = Channel(SYSTEM_CHANNEL, customer["c_tenant_id"], "", True)
    try:
        if await find_durable(conn, claim) is not None:
            return 0  # opened already (the chunk's transaction makes this rare)
        async with conn.transaction():  # a savepoint: one refusal spares the others
            view = await open_repayment(
                conn,
                ids=ctx.ids,
                cipher=ctx.cipher,
                reference=ctx.reference.data,
                channel=channel,
                body=body,
                key=claim.key,
                today=day,
            )
            await record(conn, claim, customer_id, StoredResponse(201, encode(view)))
    except ApiError as exc:
        log.info(
            "auto-deduction passed over",
            extra={"customer_id": customer_id, "code": exc.code, "day": str(day)},
        )
        return 0
    return 1

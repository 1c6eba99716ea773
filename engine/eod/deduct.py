"""Step `deduct`: auto-deduction (自动扣款) — for every customer with anything due on or
before the day, one combined debit of the card on file for all their loans due, on
the day's value date: exactly the path of `POST /v1/repayments` with mode `due` (phase
A here, the debit and its completion by the relay, one merged SMS).

Each customer's repayment is recorded under the idempotency key
`autodebit:<day>:<customer>` of the system channel `eod`, in the same transaction: a
chunk redone after a crash finds it and makes no second debit. A customer whose loans
refuse (a repayment already in progress, nothing due any more) is passed over in a
savepoint; the rest of the chunk goes on. A failed debit leaves the installment due:
tomorrow it is overdue, and tomorrow's day-end tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

import asyncpg

from engine.contract.codec import encode
from engine.contract.errors import ApiError
from engine.contract.messages import RepaymentCreate, RepaymentItemCreate
from engine.eod import keys, progress
from engine.eod.context import EodContext
from engine.idempotency.records import Claim, StoredResponse, find_durable, request_digest
from engine.idempotency.records import store_durable as record
from engine.services.customers import BANK_CARD
from engine.services.repayments import open_repayment
from engine.stores.reference import Channel

log = logging.getLogger(__name__)

STEP = "deduct"
SYSTEM_CHANNEL = "eod"
ITEMS_MAX = 20  # a repayment's items (API.md); a customer with more gets several
DUE_SQL = """SELECT DISTINCT l.customer_id FROM loan_plan p JOIN loan l ON l.loan_id = p.loan_id
             WHERE p.next_due_date <= $1 AND l.status = 'disbursed' AND l.customer_id > $2
             ORDER BY l.customer_id LIMIT $3"""


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, DUE_SQL, (day,), after, ctx.settings.deduct_chunk)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, customer_ids: list[int]
) -> int:
    """One repayment (or a few) per customer of the chunk; returns how many were opened."""
    opened = 0
    async with conn.transaction():
        customers = await conn.fetch(
            """SELECT customer_id, tenant_id, bank_card_ciphertext FROM customer
               WHERE customer_id = ANY($1::bigint[]) ORDER BY customer_id""",
            customer_ids,
        )
        for customer in customers:
            opened += await _deduct(conn, ctx, day, customer)
        await progress.advance(
            conn, day, STEP, start=after, last=customer_ids[-1], rows=len(customers)
        )
    return opened


async def _deduct(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, customer: asyncpg.Record
) -> int:
    customer_id = customer["customer_id"]
    loan_ids = [
        r[0]
        for r in await conn.fetch(
            """SELECT l.loan_id FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
               WHERE l.customer_id = $1 AND l.status = 'disbursed' AND p.next_due_date <= $2
                 AND l.pending_repayment_id IS NULL
               ORDER BY l.loan_id""",
            customer_id,
            day,
        )
    ]
    card = ctx.cipher.decrypt(customer["bank_card_ciphertext"], context=BANK_CARD, row=customer_id)
    channel = Channel(SYSTEM_CHANNEL, customer["tenant_id"], "", True)
    opened = 0
    for part, start in enumerate(range(0, len(loan_ids), ITEMS_MAX)):
        items = [RepaymentItemCreate(str(i), "due") for i in loan_ids[start : start + ITEMS_MAX]]
        body = RepaymentCreate(str(customer_id), items, card)
        key = f"autodebit:{day}:{customer_id}:{part}"
        claim = Claim(SYSTEM_CHANNEL, key, request_digest("EOD", "/eod/deduct", encode(body)))
        try:
            if await find_durable(conn, claim) is not None:
                continue  # opened already (the chunk's transaction makes this rare)
            async with conn.transaction():  # a savepoint: one refusal spares the others
                view = await open_repayment(
                    conn,
                    ids=ctx.ids,
                    cipher=ctx.cipher,
                    reference=ctx.reference.data,
                    channel=channel,
                    body=body,
                    key=key,
                    today=day,
                )
                await record(conn, claim, customer_id, StoredResponse(201, encode(view)))
        except ApiError as exc:
            log.info(
                "auto-deduction passed over",
                extra={"customer_id": customer_id, "code": exc.code, "day": str(day)},
            )
            continue
        opened += 1
    return opened

"""Step `remind`: an SMS to each customer a few days before a due date (the
`remind_sms` rules: `days_before_due`), one per customer and date, naming every loan
and the amount the card will be debited. It goes through the outbox like every SMS."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg

from engine.eod import keys, progress
from engine.eod.context import EodContext
from engine.services.loan_store import LOAN_WITH_PLAN_SQL, stored_loan
from engine.services.notify import sms_instruction
from engine.stores.outbox import enqueue_many
from ledger.money import format_fen
from ledger.overdue import unpaid_fen

STEP = "remind"
CUSTOMERS_SQL = """SELECT DISTINCT l.customer_id
                   FROM loan_plan p JOIN loan l ON l.loan_id = p.loan_id
                   WHERE p.next_due_date = ANY($1::date[]) AND l.status = 'disbursed'
                     AND l.customer_id > $2
                   ORDER BY l.customer_id LIMIT $3"""
_LOANS_SQL = (
    LOAN_WITH_PLAN_SQL
    + """ WHERE loan.customer_id = ANY($1::bigint[]) AND loan.status = 'disbursed'
          AND p.next_due_date = ANY($2::date[]) ORDER BY loan.loan_id"""
)


def targets(ctx: EodContext, day: dt.date) -> list[dt.date]:
    return [day + dt.timedelta(days=n) for n in ctx.rules.reminder_days]


def chunks(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int
) -> AsyncIterator[list[int]]:
    return keys.chunks(conn, CUSTOMERS_SQL, (targets(ctx, day),), after, ctx.settings.remind_chunk)


async def run_chunk(
    conn: asyncpg.Connection, ctx: EodContext, day: dt.date, after: int, customer_ids: list[int]
) -> int:
    """Queue the chunk's reminders; returns how many SMS."""
    async with conn.transaction():
        records = await conn.fetch(_LOANS_SQL, customer_ids, targets(ctx, day))
        cards = {
            r[0]: r[1]
            for r in await conn.fetch(
                "SELECT customer_id, bank_card_masked FROM customer "
                "WHERE customer_id = ANY($1::bigint[])",
                customer_ids,
            )
        }
        due: dict[tuple[int, str, dt.date], list[tuple[int, str, int]]] = defaultdict(list)
        wanted = set(targets(ctx, day))
        for record in records:
            loan = stored_loan(record)
            pairs = zip(loan.state.plan.installments, loan.state.statuses, strict=True)
            for item, status in pairs:
                fen = unpaid_fen(item, status)
                if fen and item.due_date in wanted:
                    key = (loan.row.customer_id, loan.row.tenant_id, item.due_date)
                    due[key].append((loan.row.loan_id, loan.row.receipt_no, fen))
        await enqueue_many(  # the chunk's reminders in one statement
            conn,
            [
                sms_instruction(
                    ctx.ids,
                    ctx.reference.data,
                    tenant_id=tenant_id,
                    customer_id=customer_id,
                    ref_id=loans[0][0],
                    kind="reminder",
                    fields={
                        "due_date": f"{target.month}月{target.day}日",
                        "card_last4": cards.get(customer_id, "")[-4:],
                        "amount": format_fen(sum(fen for _, _, fen in loans)),
                        "receipt_nos": "、".join(receipt for _, receipt, _ in loans),
                    },
                )
                for (customer_id, tenant_id, target), loans in sorted(due.items())
            ],
        )
        await progress.advance(conn, day, STEP, start=after, last=customer_ids[-1], rows=len(due))
    return len(due)

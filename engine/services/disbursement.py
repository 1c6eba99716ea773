"""The second phase of a drawdown: core banking's answer to "pay this card".

    disbursing ──core: succeeded──► disbursed   Dr disbursement_clearing / Cr core_settlement,
                                                SMS queued, latency recorded
               ──core: failed─────► failed      Dr disbursement_clearing / Cr loan_principal
                                                (the booking reversed), line restored

Applied under the loan's row lock and only from `disbursing`, so an answer that
arrives twice (a relay and an inquiry) changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import json

import asyncpg

from engine import metrics
from engine.outbox import Claimed, finish
from engine.reference import ReferenceData
from engine.services.notify import queue_sms
from ledger.chart import Code
from ledger.money import format_fen
from ledger.postings import Leg, Posting
from ledger.store import post
from sharding.ids import IdGenerator, shard_of_id


async def complete_disbursement(
    conn: asyncpg.Connection,
    ids: IdGenerator,
    reference: ReferenceData,
    claimed: Claimed,
    *,
    succeeded: bool,
    outcome: str,
) -> None:
    """Apply core's definite answer (the request-to-disbursed time goes to its histogram)."""
    assert conn.is_in_transaction()
    loan = await conn.fetchrow(
        """SELECT l.loan_id, l.customer_id, l.credit_line_id, l.tenant_id, l.channel_id,
                  l.principal_fen, l.status, l.receipt_no, l.disburse_to_masked, l.requested_at,
                  c.application_id
           FROM loan l JOIN credit_line c USING (credit_line_id)
           WHERE l.loan_id = $1 FOR UPDATE OF l""",
        claimed.ref_id,
    )
    assert loan is not None, claimed
    if loan["status"] != "disbursing":
        await finish(conn, claimed, "done" if loan["status"] != "failed" else "failed", outcome)
        return
    today = reference.business_date
    amount_fen = loan["principal_fen"]
    customer_id = loan["customer_id"]
    shard = shard_of_id(customer_id)
    if succeeded:
        disbursed_at = await conn.fetchval(
            """UPDATE loan SET status = 'disbursed', disbursed_at = now(), updated_at = now()
               WHERE loan_id = $1 RETURNING disbursed_at""",
            loan["loan_id"],
        )
        legs = (
            Leg(Code.DISBURSEMENT_CLEARING, None, amount_fen),
            Leg(Code.CORE_SETTLEMENT, None, -amount_fen),
        )
        await post(
            conn,
            Posting(ids.next_id(shard), customer_id, "disbursement", loan["loan_id"], today, legs),
        )
        await queue_sms(
            conn,
            ids,
            reference,
            tenant_id=loan["tenant_id"],
            customer_id=customer_id,
            ref_id=loan["loan_id"],
            kind="drawdown",
            fields={
                "channel": loan["channel_id"],
                "amount": format_fen(amount_fen),
                "card_last4": loan["disburse_to_masked"][-4:],
                "receipt_no": loan["receipt_no"],
            },
        )
        await finish(conn, claimed, "done", outcome)
        if loan["application_id"] is not None:
            await _journey_done(conn, loan["credit_line_id"], disbursed_at)
        latency: dt.timedelta = disbursed_at - loan["requested_at"]
        metrics.DISBURSEMENT_LATENCY.observe(latency.total_seconds())
        return
    await conn.execute(
        """UPDATE loan SET status = 'failed', failure_reason = $2, outstanding_principal_fen = 0,
               updated_at = now()
           WHERE loan_id = $1""",
        loan["loan_id"],
        outcome,
    )
    # The line before the ledger's stripes: the order a drawdown takes them in
    # (loan, line, stripes), so the two never deadlock.
    await conn.execute(
        """UPDATE credit_line SET used_fen = used_fen - $2, updated_at = now()
           WHERE credit_line_id = $1""",
        loan["credit_line_id"],
        amount_fen,
    )
    legs = (
        Leg(Code.DISBURSEMENT_CLEARING, None, amount_fen),
        Leg(Code.LOAN_PRINCIPAL, loan["loan_id"], -amount_fen),
    )
    await post(
        conn,
        Posting(ids.next_id(shard), customer_id, "drawdown_void", loan["loan_id"], today, legs),
    )
    await finish(conn, claimed, "failed", outcome)


async def _journey_done(
    conn: asyncpg.Connection, credit_line_id: int, disbursed_at: dt.datetime
) -> None:
    """The first loan of a line granted through an application ends its journey."""
    row = await conn.fetchrow(
        """SELECT a.application_id, a.created_at, a.steps FROM credit_line l
           JOIN application a USING (application_id) WHERE l.credit_line_id = $1""",
        credit_line_id,
    )
    if row is None or any(step["step"] == "disbursed" for step in json.loads(row["steps"])):
        return
    steps = [*json.loads(row["steps"]), {"step": "disbursed", "at": disbursed_at.isoformat()}]
    await conn.execute(
        "UPDATE application SET steps = $2::jsonb WHERE application_id = $1",
        row["application_id"],
        json.dumps(steps),
    )
    metrics.JOURNEY.observe((disbursed_at - row["created_at"]).total_seconds())

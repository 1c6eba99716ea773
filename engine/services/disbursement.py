"""The second phase of a drawdown: core banking's answer to "pay this card".

    disbursing ──core: succeeded──► disbursed   Dr disbursement_clearing / Cr core_settlement,
                                                SMS queued, latency recorded
               ──core: failed─────► failed      Dr disbursement_clearing / Cr loan_principal
                                                (the booking reversed), line restored

Applied under the loan's row lock and only from `disbursing`, so an answer that
arrives twice (a relay and an inquiry) changes nothing the second time.
Successes are applied many at a time (`complete_disbursements`, one call of the
database function of the same name); failures one by one.
"""

from __future__ import annotations

import asyncpg
import msgspec

from engine.runtime import metrics
from engine.services.notify import sms_payload, sms_text
from engine.stores.outbox import Claimed, finish
from engine.stores.reference import ReferenceData
from ledger.chart import Code
from ledger.money import format_fen
from ledger.postings import Leg, Posting
from ledger.store import post
from sharding.ids import IdGenerator, shard_of_id


class PaidLoan(msgspec.Struct, frozen=True):
    """What a disbursed loan's SMS tells: read with the card, before the payment."""

    loan_id: int
    customer_id: int
    tenant_id: str
    channel_id: str
    principal_fen: int
    disburse_to_masked: str
    receipt_no: str


PAID_LOANS_SQL = """SELECT loan_id, customer_id, tenant_id, channel_id, principal_fen,
    disburse_to_masked, receipt_no FROM loan WHERE loan_id = ANY($1::bigint[])"""


class Paid(msgspec.Struct, frozen=True):
    """Core's "succeeded" for one payment: its outbox claim, core's ID, the loan."""

    claimed: Claimed
    core_txn_id: str
    loan: PaidLoan


async def paid_loans(conn: asyncpg.Connection, loan_ids: list[int]) -> dict[int, PaidLoan]:
    rows = await conn.fetch(PAID_LOANS_SQL, loan_ids)
    return {row["loan_id"]: PaidLoan(**dict(row)) for row in rows}


class Disbursed(msgspec.Struct, frozen=True):
    """A loan this call disbursed: request-to-disbursed time, and its journey's if the
    line came from an application (for `observe`, after the commit): the whole of it,
    and the system's own part (`system_s`: application to decision, plus this drawdown's
    request to money on the card; what the customer and the officers took is not in it)."""

    latency_s: float
    journey_s: float | None
    system_s: float | None = None


# The rules' time of the applications whose first loan a call disbursed.
_DECISION_SECONDS_SQL = """SELECT l.loan_id,
        extract(epoch FROM a.decided_at - a.created_at)::float8 AS decision_s
    FROM loan l JOIN credit_line c USING (credit_line_id)
    JOIN application a ON a.application_id = c.application_id
    WHERE l.loan_id = ANY($1::bigint[]) AND a.decided_at IS NOT NULL"""


async def complete_disbursements(
    conn: asyncpg.Connection, ids: IdGenerator, reference: ReferenceData, paid: list[Paid]
) -> list[Disbursed]:
    """Apply core's "succeeded" to many loans in one round trip and one commit (the
    loan-ID order keeps two callers from deadlocking); returns what it disbursed."""
    today = reference.business_date
    columns: tuple[list[object], ...] = tuple([] for _ in range(7))
    stripe: int | None = None
    for item in sorted(paid, key=lambda p: p.loan.loan_id):
        loan, shard = item.loan, shard_of_id(item.loan.customer_id)
        txn_id = ids.next_id(shard)
        legs = (
            Leg(Code.DISBURSEMENT_CLEARING, None, loan.principal_fen),
            Leg(Code.CORE_SETTLEMENT, None, -loan.principal_fen),
        )
        posting = Posting(txn_id, loan.customer_id, "disbursement", loan.loan_id, today, legs)
        # The whole batch goes through its first posting's stripe of the internal
        # accounts: it holds two stripe rows till its commit, not one pair per loan,
        # and a drawdown (which needs one) seldom waits for it.
        stripe = posting.stripe() if stripe is None else stripe
        text = sms_text(
            reference,
            tenant_id=loan.tenant_id,
            kind="drawdown",
            fields={
                "channel": reference.channel_name(loan.channel_id),
                "amount": format_fen(loan.principal_fen),
                "card_last4": loan.disburse_to_masked[-4:],
                "receipt_no": loan.receipt_no,
            },
        )
        values = (
            item.claimed.outbox_id,
            item.claimed.attempts,
            loan.loan_id,
            item.core_txn_id,
            txn_id,
            ids.next_id(shard),
            sms_payload("drawdown", text),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await conn.fetch(
        """SELECT * FROM complete_disbursements(
               $1, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9, $10, $11)""",
        *columns,
        today,
        stripe,
        str(Code.DISBURSEMENT_CLEARING),
        str(Code.CORE_SETTLEMENT),
    )
    ended = [row["r_loan_id"] for row in rows if row["r_journey_started_at"] is not None]
    decision_s: dict[int, float] = {}
    if ended:  # first loans of lines from applications only: seldom on the hot path
        decision_s = {
            r["loan_id"]: r["decision_s"] for r in await conn.fetch(_DECISION_SECONDS_SQL, ended)
        }
    done = []
    for row in rows:
        started = row["r_journey_started_at"]
        latency_s = (row["r_disbursed_at"] - row["r_requested_at"]).total_seconds()
        decided_s = decision_s.get(row["r_loan_id"]) if started is not None else None
        done.append(
            Disbursed(
                latency_s=latency_s,
                journey_s=None
                if started is None
                else (row["r_disbursed_at"] - started).total_seconds(),
                system_s=None if decided_s is None else decided_s + latency_s,
            )
        )
    return done


def observe(done: list[Disbursed]) -> None:
    """Record the latencies of committed disbursements (never inside a transaction that
    may be retried: a retry would count them twice)."""
    for item in done:
        metrics.DISBURSEMENT_LATENCY.observe(item.latency_s)
        if item.journey_s is not None:
            metrics.JOURNEY.observe(item.journey_s)
        if item.system_s is not None:
            metrics.ORIGINATION_SYSTEM.observe(item.system_s)


async def complete_disbursement(
    conn: asyncpg.Connection,
    ids: IdGenerator,
    reference: ReferenceData,
    claimed: Claimed,
    *,
    succeeded: bool,
    outcome: str,
) -> list[Disbursed]:
    """Apply core's definite answer to one payment (a relay's inquiry, or a failure)."""
    assert conn.is_in_transaction()
    if succeeded:
        loan = (await paid_loans(conn, [claimed.ref_id]))[claimed.ref_id]
        return await complete_disbursements(conn, ids, reference, [Paid(claimed, outcome, loan)])
    loan_row = await conn.fetchrow(
        """SELECT loan_id, customer_id, credit_line_id, principal_fen, status FROM loan
           WHERE loan_id = $1 FOR UPDATE""",
        claimed.ref_id,
    )
    assert loan_row is not None, claimed
    if loan_row["status"] != "disbursing":
        state = "done" if loan_row["status"] != "failed" else "failed"
        await finish(conn, claimed, state, outcome)
        return []
    amount_fen, customer_id = loan_row["principal_fen"], loan_row["customer_id"]
    await conn.execute(
        """UPDATE loan SET status = 'failed', failure_reason = $2, outstanding_principal_fen = 0,
               updated_at = now()
           WHERE loan_id = $1""",
        loan_row["loan_id"],
        outcome,
    )
    # The line before the ledger's stripes: the order a drawdown takes them in
    # (loan, line, stripes), so the two never deadlock.
    await conn.execute(
        """UPDATE credit_line SET used_fen = used_fen - $2, updated_at = now()
           WHERE credit_line_id = $1""",
        loan_row["credit_line_id"],
        amount_fen,
    )
    legs = (
        Leg(Code.DISBURSEMENT_CLEARING, None, amount_fen),
        Leg(Code.LOAN_PRINCIPAL, loan_row["loan_id"], -amount_fen),
    )
    txn_id = ids.next_id(shard_of_id(customer_id))
    await post(
        conn,
        Posting(
            txn_id, customer_id, "drawdown_void", loan_row["loan_id"], reference.business_date, legs
        ),
    )
    await finish(conn, claimed, "failed", outcome)
    return []

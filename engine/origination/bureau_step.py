"""The bureau step of an application: query, keep the parsed report, decide.

Run inline by the request (bounded by the bureau's time-out) and, when that
could not finish it, by the relay from the application's `bureau` outbox row. The
row is written only when the decision depends on a report, in the transaction that
evidenced the applicant's authorization (`engine.origination.consent`). Each query is
counted per member bank (`bureau_queries_total{tenant,outcome}`; the reports kept
carry their tenant too).
A time-out or an unreadable answer leaves the application `pending_bureau` and
the row is tried again later: no decision is ever made without the rules
having run on a report.
"""

from __future__ import annotations

import json
import logging

from engine.adapters.bureau import BureauOutcome, BureauReportError, CreditBureau
from engine.origination.service import APPLICANT, Origination, decide_application, store_report
from engine.runtime import metrics
from engine.services.context import Services
from engine.stores import outbox
from engine.stores.outbox import Claimed
from engine.stores.shards import acquire

log = logging.getLogger(__name__)

RETRY_S = 5.0


async def run_bureau_step(
    svc: Services, ctx: Origination, bureau: CreditBureau, shard: str, claimed: Claimed
) -> bool:
    """True when the application was decided; otherwise the row waits for another try."""
    pool = svc.pools.pool(shard)
    async with acquire(pool) as conn:
        row = await conn.fetchrow(
            """SELECT status, tenant_id, applicant_ciphertext FROM application
               WHERE application_id = $1""",
            claimed.ref_id,
        )
    assert row is not None, claimed
    if row["status"] != "pending_bureau":
        async with acquire(pool) as conn:
            await outbox.finish(conn, claimed, "done", "already decided")
        return True
    applicant = json.loads(
        svc.cipher.decrypt(
            bytes(row["applicant_ciphertext"]), context=APPLICANT, row=claimed.ref_id
        )
    )
    result = await bureau.report(f"B{claimed.ref_id}", applicant["name"], applicant["id_number"])
    # Counted whatever the answer: a query that timed out may still be billed.
    metrics.BUREAU_QUERIES.labels(row["tenant_id"], result.outcome.value).inc()
    if result.outcome is BureauOutcome.OK:
        try:
            async with acquire(pool) as conn, conn.transaction():
                report = await store_report(conn, ctx, claimed.ref_id, result, svc.business_date)
                assert report is not None
                verdict = await decide_application(svc, ctx, conn, claimed.ref_id, report)
                await outbox.finish(conn, claimed, "done", verdict.outcome)
            return True
        except BureauReportError as exc:
            log.error(
                "bureau report unreadable",
                extra={"application_id": claimed.ref_id, "error": str(exc)},
            )
    async with acquire(pool) as conn:
        await outbox.defer(conn, claimed, "pending", RETRY_S, result.reason or "unreadable report")
    return False

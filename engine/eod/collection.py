"""What post-loan rules do to a late loan: its customer's lines frozen, the loan handed
to a loan officer of the customer's branch (the collection queue), in turn.

Officers are taken round-robin per member bank and branch: a cursor on the shard
remembers the last one given a case, the next case goes to the one after it in id
order. A branch without officers falls back to the member bank's; with none at all,
the case opens `unassigned` and shows in the queue for every officer of the bank.
Operators reassign a case and lift a freeze (`reassign`, `engine.services.credit_lines`).
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from engine.contract.errors import NotFound, Unprocessable
from engine.contract.messages import CollectionCaseView
from engine.stores.reference import ReferenceData
from ledger.money import format_fen

UNASSIGNED = "unassigned"


class LateLoan(msgspec.Struct, frozen=True):
    loan_id: int
    customer_id: int
    tenant_id: str
    days_past_due: int


async def freeze_lines(conn: asyncpg.Connection, customer_ids: list[int], rule: str) -> int:
    """Freeze the customers' active lines for new drawdowns, but those an operator lifted
    the freeze of (waived until the cure); returns how many. The lines are locked in id
    order, as a repayment's completion locks them."""
    if not customer_ids:
        return 0
    status = await conn.execute(
        """UPDATE credit_line l SET status = 'frozen', frozen_by = 'rule', updated_at = now(),
               status_reason = $2
           FROM (SELECT credit_line_id FROM credit_line
                 WHERE customer_id = ANY($1::bigint[]) AND status = 'active'
                   AND NOT rule_freeze_waived
                 ORDER BY credit_line_id FOR NO KEY UPDATE) x
           WHERE l.credit_line_id = x.credit_line_id AND l.status = 'active'
             AND NOT l.rule_freeze_waived""",
        sorted(set(customer_ids)),
        f"post-loan rule {rule}",
    )
    return int(status.split()[-1])


async def end_waivers(conn: asyncpg.Connection, customer_ids: list[int]) -> int:
    """End the freeze rule's waiver on the lines of those customers none of whose loans
    is late any more (after `risk.cure`, in its transaction); returns how many lines."""
    if not customer_ids:
        return 0
    status = await conn.execute(
        """UPDATE credit_line l SET rule_freeze_waived = false, updated_at = now()
           FROM (SELECT credit_line_id FROM credit_line c
                 WHERE c.customer_id = ANY($1::bigint[]) AND c.rule_freeze_waived
                   AND NOT EXISTS (SELECT 1 FROM loan_risk r
                                   WHERE r.customer_id = c.customer_id AND r.days_past_due > 0)
                 ORDER BY credit_line_id FOR NO KEY UPDATE) x
           WHERE l.credit_line_id = x.credit_line_id""",
        sorted(set(customer_ids)),
    )
    return int(status.split()[-1])


async def open_cases(
    conn: asyncpg.Connection, reference: ReferenceData, day: dt.date, loans: list[LateLoan]
) -> int:
    """A collection case for each loan without an open one, each given an officer in
    turn; returns how many opened."""
    if not loans:
        return 0
    ids = [loan.loan_id for loan in loans]
    have = {
        r[0]
        for r in await conn.fetch(
            "SELECT loan_id FROM collection_case WHERE loan_id = ANY($1::bigint[]) "
            "AND status = 'open'",
            ids,
        )
    }
    new = [loan for loan in loans if loan.loan_id not in have]
    if not new:
        return 0
    branches = {
        r["customer_id"]: r["branch_code"]
        for r in await conn.fetch(
            "SELECT customer_id, branch_code FROM customer WHERE customer_id = ANY($1::bigint[])",
            [loan.customer_id for loan in new],
        )
    }
    rows = []
    for loan in new:
        branch = branches.get(loan.customer_id, "main")
        officer = await _next_officer(conn, reference, loan.tenant_id, branch)
        rows.append((loan.loan_id, loan.customer_id, loan.tenant_id, branch, officer, day,
                     loan.days_past_due))  # fmt: skip
    await conn.executemany(
        """INSERT INTO collection_case (loan_id, customer_id, tenant_id, branch_code,
               officer_id, opened_on, dpd_at_open)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (loan_id) DO UPDATE
           SET status = 'open', officer_id = excluded.officer_id, opened_on = excluded.opened_on,
               dpd_at_open = excluded.dpd_at_open, closed_on = NULL, updated_at = now()""",
        rows,
    )
    return len(rows)


async def _next_officer(
    conn: asyncpg.Connection, reference: ReferenceData, tenant_id: str, branch: str
) -> str:
    officers = reference.branch_officers(tenant_id, branch)
    if not officers:
        return UNASSIGNED
    last = await conn.fetchval(
        """SELECT last_officer_id FROM collection_cursor
           WHERE tenant_id = $1 AND branch_code = $2 FOR UPDATE""",
        tenant_id,
        branch,
    )
    later = [o for o in officers if last is None or o > last]
    chosen = later[0] if later else officers[0]
    await conn.execute(
        """INSERT INTO collection_cursor (tenant_id, branch_code, last_officer_id)
           VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, branch_code) DO UPDATE SET last_officer_id = $3""",
        tenant_id,
        branch,
        chosen,
    )
    return chosen


async def close_cases(conn: asyncpg.Connection, day: dt.date, loan_ids: list[int]) -> int:
    if not loan_ids:
        return 0
    status = await conn.execute(
        """UPDATE collection_case SET status = 'closed', closed_on = $2, updated_at = now()
           WHERE loan_id = ANY($1::bigint[]) AND status = 'open'""",
        loan_ids,
        day,
    )
    return int(status.split()[-1])


_CASE_SQL = """SELECT c.loan_id, c.customer_id, c.tenant_id, c.branch_code, c.officer_id,
                      c.status, c.opened_on, c.dpd_at_open, c.closed_on,
                      coalesce(r.days_past_due, 0) AS days_past_due,
                      coalesce(r.classification, 'normal') AS classification,
                      l.receipt_no, l.outstanding_principal_fen
               FROM collection_case c
               JOIN loan l ON l.loan_id = c.loan_id
               LEFT JOIN loan_risk r ON r.loan_id = c.loan_id"""


def case_view(row: asyncpg.Record) -> CollectionCaseView:
    return CollectionCaseView(
        loan_id=str(row["loan_id"]),
        customer_id=str(row["customer_id"]),
        tenant_id=row["tenant_id"],
        branch_code=row["branch_code"],
        officer_id=row["officer_id"],
        status=row["status"],
        opened_on=row["opened_on"],
        dpd_at_open=row["dpd_at_open"],
        days_past_due=row["days_past_due"],
        classification=row["classification"],
        receipt_no=row["receipt_no"],
        outstanding_principal=format_fen(row["outstanding_principal_fen"]),
        closed_on=row["closed_on"],
    )


async def open_cases_of(
    conn: asyncpg.Connection, officer_id: str | None, limit: int, tenant_id: str | None = None
) -> list[CollectionCaseView]:
    """One shard's open cases, the latest first by DPD (of one officer and the bank's
    unassigned ones, or all; of one member bank, or of every one when `tenant_id` is
    None)."""
    rows = await conn.fetch(
        _CASE_SQL
        + """ WHERE c.status = 'open' AND ($1::text IS NULL OR c.officer_id IN ($1, $4))
                AND ($3::text IS NULL OR c.tenant_id = $3)
              ORDER BY coalesce(r.days_past_due, 0) DESC, c.loan_id LIMIT $2""",
        officer_id,
        limit,
        tenant_id,
        UNASSIGNED,
    )
    return [case_view(row) for row in rows]


async def reassign(
    conn: asyncpg.Connection,
    reference: ReferenceData,
    loan_id: int,
    officer_id: str,
    tenant_id: str | None = None,
) -> CollectionCaseView:
    """Hand an open case to another active officer of the same member bank (`tenant_id`:
    the operator's member bank; another bank's case is not found; None: any bank)."""
    row = await conn.fetchrow(_CASE_SQL + " WHERE c.loan_id = $1 FOR UPDATE OF c", loan_id)
    if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
        raise NotFound("COLLECTION_CASE_NOT_FOUND", f"no collection case for loan {loan_id}")
    if row["status"] != "open":
        raise Unprocessable("COLLECTION_CASE_CLOSED", "the case is closed")
    officer = reference.officers.get(officer_id)
    if officer is None or not officer.active or officer.tenant_id != row["tenant_id"]:
        raise Unprocessable(
            "OFFICER_UNKNOWN", f"no active officer {officer_id} of member bank {row['tenant_id']}"
        )
    await conn.execute(
        "UPDATE collection_case SET officer_id = $2, updated_at = now() WHERE loan_id = $1",
        loan_id,
        officer_id,
    )
    updated = await conn.fetchrow(_CASE_SQL + " WHERE c.loan_id = $1", loan_id)
    assert updated is not None
    return case_view(updated)

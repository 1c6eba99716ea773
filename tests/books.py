"""The books' invariants, read straight from a shard: what every test that moves money
(the day-end's, the reliability battery's) checks afterwards. Each check returns the
problems it found, as lines for people; an empty list is a clean book.

1. every transaction and the whole book balance (deep trial balance)
2. a line's used amount is its loans' outstanding principal (disbursing and disbursed)
3. a loan's penalty receivable holds exactly the charges its plan has booked and unpaid
4. a loan's interest receivable (its row of the accrual sub-ledger, accrued - settled)
   is what the day-end accrued for it minus the interest its repayments paid; a
   settled loan's receivables are both zero; the loans' own interest accounts are not
   posted to (the deep trial balance sets the control account against the sub-ledger)
5. after the day-end of `day`: each loan has accrued exactly its figure for that day
   (ledger.accrual), unless a repayment is in progress on it
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from ledger.store import trial_balance


async def problems(conn: asyncpg.Connection, accrued_through: dt.date | None = None) -> list[str]:
    found = await _balanced(conn)
    found += await _lines(conn)
    found += await _penalty_receivables(conn)
    found += await _interest_receivables(conn)
    if accrued_through is not None:
        found += await _accrual_figures(conn, accrued_through)
    return found


async def _balanced(conn: asyncpg.Connection) -> list[str]:
    book = await trial_balance(conn, deep=True)
    if book.balanced and book.subledger_agrees:
        return []
    return [f"book out of balance (or its accrual sub-ledger off): {book}"]


async def _lines(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT c.credit_line_id, c.used_fen, coalesce(sum(l.outstanding_principal_fen), 0) AS owed
           FROM credit_line c
           LEFT JOIN loan l ON l.credit_line_id = c.credit_line_id
                           AND l.status IN ('disbursing', 'disbursed')
           GROUP BY c.credit_line_id HAVING c.used_fen <> coalesce(sum(l.outstanding_principal_fen), 0)"""
    )
    return [f"line {r[0]}: used {r[1]}, loans owe {r[2]}" for r in rows]


async def _penalty_receivables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT l.loan_id, l.status, coalesce(a.debit_total_fen - a.credit_total_fen, 0) AS held,
                  (SELECT coalesce(sum(x), 0) FROM unnest(p.penalty_unpaid_fen) x)
                  + (SELECT coalesce(sum(x), 0) FROM unnest(p.compound_unpaid_fen) x) AS booked
           FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
           LEFT JOIN ledger_account a ON a.code = 'loan_penalty_receivable'
                                     AND a.owner_id = l.loan_id
           LEFT JOIN loan_accrual o ON o.loan_id = l.loan_id
           WHERE l.status IN ('disbursed', 'settled') AND coalesce(o.penalty_opening_fen, 0) = 0"""
    )
    out = []
    for r in rows:
        want = 0 if r["status"] == "settled" else r["booked"]
        if r["held"] != want:
            out.append(f"loan {r['loan_id']} ({r['status']}): penalty receivable {r['held']}, "
                       f"charges booked {want}")  # fmt: skip
    return out


async def _interest_receivables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT l.loan_id, l.status,
                  coalesce(o.interest_accrued_fen - o.interest_settled_fen, 0) AS held,
                  coalesce(o.interest_accrued_fen, 0) AS accrued,
                  (SELECT coalesce(sum(i.interest_fen), 0) FROM repayment_item i
                   JOIN repayment r ON r.repayment_id = i.repayment_id
                   WHERE i.loan_id = l.loan_id AND r.status = 'succeeded') AS paid
           FROM loan l
           LEFT JOIN loan_accrual o ON o.loan_id = l.loan_id
           WHERE l.status IN ('disbursed', 'settled')"""
    )
    out = [
        f"loan {r['owner_id']}: its own interest account holds {r['held']} (not posted to "
        "since the sub-ledger)"
        for r in await conn.fetch(
            """SELECT a.owner_id, a.debit_total_fen - a.credit_total_fen AS held
               FROM ledger_account a JOIN loan l ON l.loan_id = a.owner_id
               WHERE a.code = 'loan_interest_receivable'
                 AND a.debit_total_fen <> a.credit_total_fen"""
        )
    ]
    for r in rows:
        want = 0 if r["status"] == "settled" else r["accrued"] - r["paid"]
        if r["held"] != want:
            out.append(f"loan {r['loan_id']} ({r['status']}): interest receivable {r['held']}, "
                       f"accrued {r['accrued']} - paid {r['paid']}")  # fmt: skip
    return out


async def _accrual_figures(conn: asyncpg.Connection, day: dt.date) -> list[str]:
    rows = await conn.fetch(
        """SELECT l.loan_id, coalesce(o.interest_accrued_fen, 0) AS accrued,
                  interest_accrued_fen(l.start_date, p.due_date, p.interest_fen, $1)
                  + coalesce(o.interest_extra_fen, 0) AS figure
           FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
           LEFT JOIN loan_accrual o ON o.loan_id = l.loan_id
           WHERE l.status = 'disbursed' AND l.pending_repayment_id IS NULL""",
        day,
    )
    return [
        f"loan {r['loan_id']}: accrued {r['accrued']}, its figure on {day} is {r['figure']}"
        for r in rows
        if r["accrued"] != r["figure"]
    ]

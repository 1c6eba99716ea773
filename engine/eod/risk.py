"""Days past due and five-category classification, as each day-end records them.

`loan_risk` holds a loan's DPD and class as of the last day-end that saw it late (a
loan never late has no row); every change of class is kept in `loan_class_change`
with its date. The class is the regulator's floor for the DPD (MONEY.md): a bank may
classify worse, never better; a loan that is paid up returns to normal (`cure`).
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from ledger.overdue import classification_floor


class Risk(msgspec.Struct, frozen=True):
    loan_id: int
    customer_id: int
    days_past_due: int


async def record(conn: asyncpg.Connection, day: dt.date, risks: list[Risk]) -> int:
    """Upsert each loan's DPD and class for `day`; returns how many changed class."""
    if not risks:
        return 0
    ids = [r.loan_id for r in risks]
    classes = [str(classification_floor(r.days_past_due)) for r in risks]
    changed = await conn.fetch(
        """WITH new AS (
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::text[])
                   AS n(loan_id, customer_id, dpd, class)),
           old AS (SELECT r.loan_id, r.classification FROM loan_risk r
                   WHERE r.loan_id = ANY($1::bigint[])),
           up AS (
               INSERT INTO loan_risk AS r (loan_id, customer_id, days_past_due, classification,
                                           classified_on, as_of)
               SELECT n.loan_id, n.customer_id, n.dpd, n.class, $5, $5 FROM new n
               ON CONFLICT (loan_id) DO UPDATE
               SET days_past_due = excluded.days_past_due, as_of = excluded.as_of,
                   classification = excluded.classification,
                   classified_on = CASE WHEN r.classification = excluded.classification
                                        THEN r.classified_on ELSE excluded.classified_on END)
           INSERT INTO loan_class_change (loan_id, customer_id, business_date, from_class,
                                          to_class, days_past_due)
           SELECT n.loan_id, n.customer_id, $5, coalesce(o.classification, 'normal'), n.class,
                  n.dpd
           FROM new n LEFT JOIN old o ON o.loan_id = n.loan_id
           WHERE n.class <> coalesce(o.classification, 'normal')
           ON CONFLICT (loan_id, business_date) DO UPDATE
           SET to_class = excluded.to_class, days_past_due = excluded.days_past_due
           RETURNING loan_id""",
        ids,
        [r.customer_id for r in risks],
        [r.days_past_due for r in risks],
        classes,
        day,
    )
    return len(changed)


CURE_SQL = """SELECT r.loan_id FROM loan_risk r
              WHERE r.days_past_due > 0 AND r.loan_id > $2
                AND NOT EXISTS (SELECT 1 FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
                                WHERE l.loan_id = r.loan_id AND l.status = 'disbursed'
                                  AND p.next_due_date < $1)
              ORDER BY r.loan_id LIMIT $3"""


async def cure(
    conn: asyncpg.Connection, day: dt.date, loan_ids: list[int]
) -> list[tuple[int, int]]:
    """Loans of `loan_ids` no longer late on `day` (paid up, or settled): DPD 0, class
    normal (the change recorded); returns them, each with its customer."""
    rows = await conn.fetch(
        """WITH cured AS (
               UPDATE loan_risk r SET days_past_due = 0, as_of = $2,
                   classification = 'normal', classified_on = $2
               WHERE r.loan_id = ANY($1::bigint[]) AND r.days_past_due > 0
                 AND NOT EXISTS (SELECT 1 FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
                                 WHERE l.loan_id = r.loan_id AND l.status = 'disbursed'
                                   AND p.next_due_date < $2)
               -- the subquery reads the statement's snapshot: the class before
               RETURNING r.loan_id, r.customer_id,
                         (SELECT o.classification FROM loan_risk o
                          WHERE o.loan_id = r.loan_id) AS before),
           changes AS (
               INSERT INTO loan_class_change (loan_id, customer_id, business_date, from_class,
                                              to_class, days_past_due)
               SELECT loan_id, customer_id, $2, before, 'normal', 0 FROM cured
               ON CONFLICT (loan_id, business_date) DO UPDATE
               SET to_class = 'normal', days_past_due = 0)
           SELECT loan_id, customer_id FROM cured""",
        loan_ids,
        day,
    )
    return [(int(r[0]), int(r[1])) for r in rows]

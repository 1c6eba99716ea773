"""The reliability battery's invariants over a set of shard databases and the fake core:
what must hold after any fault, crash or random sequence of operations.

1. the books (tests/books.py): every transaction and the whole book balance, a line's
   used amount is its loans' outstanding principal, receivables against plans
2. every loan's plan is the schedule calculator's: the plan built from the loan's
   terms, with each succeeded repayment item applied in order by the pure functions of
   ledger/ (allocation, prepayment, overdue) — never the engine's own code path
3. money at the fake core equals money in the ledger, reference by reference: each
   succeeded payment or debit at core is a posting on core_settlement of the same
   amount, and each such posting is a succeeded record at core (no money lost, none
   moved twice, none booked without moving)

`problems(...)` returns lines for people; an empty list is a clean state.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg

from ledger import allocation
from ledger.overdue import LoanState, accrue_overdue, fresh_state
from ledger.prepayment import payoff_quote, prepay
from ledger.schedule import ScheduleError, build_plan
from tests import books
from tests.waiting import eventually

_LOANS_SQL = """
SELECT l.loan_id, l.status, l.principal_fen, l.annual_rate_pct, l.penalty_multiplier,
       l.repayment_method, l.term_months, l.grace_months, l.start_date, l.outstanding_principal_fen,
       p.due_date, p.principal_fen AS plan_principal, p.interest_fen AS plan_interest,
       p.principal_paid_fen AS plan_principal_paid, p.interest_paid_fen AS plan_interest_paid
FROM loan l JOIN loan_plan p ON p.loan_id = l.loan_id
"""

# Succeeded repayment items in the order they were booked: one repayment at a time per
# loan (REPAYMENT_IN_PROGRESS), and repayment IDs grow with time.
_ITEMS_SQL = """
SELECT i.loan_id, i.mode, i.prepay_rule, i.amount_fen, i.penalty_fen, i.interest_fen,
       i.principal_fen, r.business_date, r.repayment_id
FROM repayment_item i JOIN repayment r ON r.repayment_id = i.repayment_id
WHERE r.status = 'succeeded' ORDER BY r.repayment_id
"""


def _replay(loan: asyncpg.Record, items: list[asyncpg.Record]) -> tuple[LoanState, list[str]]:
    """The calculator's state of `loan` after its repayments, and any item whose booked
    split differs from what the calculator gives."""
    state = fresh_state(
        build_plan(
            loan["principal_fen"],
            Decimal(loan["annual_rate_pct"]),
            loan["term_months"],
            loan["repayment_method"],
            loan["start_date"],
            grace_months=loan["grace_months"],
        )
    )
    multiplier = Decimal(loan["penalty_multiplier"])
    found = []
    for item in items:
        day: dt.date = item["business_date"]
        state = accrue_overdue(state, day, multiplier)
        if item["mode"] == "due":
            result = allocation.allocate_due(state, day, item["amount_fen"])
        elif item["mode"] == "prepay":
            done = prepay(
                state, day, item["principal_fen"], item["prepay_rule"] or "reduce_nearest"
            )
            result = allocation.Allocation(0, done.interest_fen, done.principal_fen, done.state, ())
        else:
            result = allocation.settle_payoff(state, day, payoff_quote(state, day, multiplier))
        split = (result.penalty_fen, result.interest_fen, result.principal_fen)
        booked = (item["penalty_fen"], item["interest_fen"], item["principal_fen"])
        if split != booked:
            found.append(
                f"loan {loan['loan_id']}: repayment {item['repayment_id']} ({item['mode']}) "
                f"booked penalty/interest/principal {booked}, the calculator gives {split}"
            )
        state = result.state
    return state, found


def _plan_problems(loan: asyncpg.Record, items: list[asyncpg.Record]) -> list[str]:
    try:
        state, found = _replay(loan, items)
    except (ScheduleError, allocation.AllocationError) as exc:
        return [f"loan {loan['loan_id']}: the calculator refuses its history: {exc}"]
    want = [
        (i.due_date, i.principal_fen, i.interest_fen, s.principal_paid_fen, s.interest_paid_fen)
        for i, s in zip(state.plan.installments, state.statuses, strict=True)
    ]
    have = list(
        zip(
            loan["due_date"],
            loan["plan_principal"],
            loan["plan_interest"],
            loan["plan_principal_paid"],
            loan["plan_interest_paid"],
            strict=True,
        )
    )
    if have != want:
        found.append(f"loan {loan['loan_id']}: plan {have} differs from the calculator's {want}")
    owed = sum(i.principal_fen for i in state.plan.installments) - sum(
        s.principal_paid_fen for s in state.statuses
    )
    if loan["status"] in ("disbursing", "disbursed") and loan["outstanding_principal_fen"] != owed:
        found.append(
            f"loan {loan['loan_id']}: outstanding {loan['outstanding_principal_fen']}, "
            f"the calculator's plan leaves {owed}"
        )
    return found


async def plan_problems(conn: asyncpg.Connection) -> list[str]:
    items: dict[int, list[asyncpg.Record]] = {}
    for item in await conn.fetch(_ITEMS_SQL):
        items.setdefault(item["loan_id"], []).append(item)
    found: list[str] = []
    for loan in await conn.fetch(_LOANS_SQL):
        if loan["status"] == "failed":
            continue  # never paid out: its plan was never in force
        found += _plan_problems(loan, items.get(loan["loan_id"], []))
    return found


_MOVEMENTS_SQL = """
SELECT t.kind, t.ref_id, sum(abs(l.amount_fen)) AS amount_fen, count(*) AS postings
FROM ledger_txn t JOIN ledger_leg l USING (txn_id)
WHERE l.code = 'core_settlement' AND t.kind IN ('disbursement', 'repayment')
GROUP BY t.kind, t.ref_id
"""
_REFERENCES_SQL = """
SELECT 'D' || loan_id AS reference, status FROM loan
UNION ALL SELECT 'R' || repayment_id, status FROM repayment
"""
_PREFIX = {"disbursement": "D", "repayment": "R"}


async def core_records(http: aiohttp.ClientSession, core_url: str) -> dict[str, dict[str, Any]]:
    """Every record of the fake core by reference (it decides a reference once)."""
    async with http.get(f"{core_url}/fake/records") as resp:
        assert resp.status == 200, await resp.text()
        records: list[dict[str, Any]] = await resp.json()
    by_reference: dict[str, dict[str, Any]] = {}
    for record in records:
        assert record["reference"] not in by_reference, record  # core moves money once
        by_reference[record["reference"]] = record
    return by_reference


async def money_problems(conn: asyncpg.Connection, at_core: dict[str, dict[str, Any]]) -> list[str]:
    """This shard's references against the core's records of the same references."""
    ours = {r["reference"]: r["status"] for r in await conn.fetch(_REFERENCES_SQL)}
    in_ledger: dict[str, int] = {}
    found = []
    for row in await conn.fetch(_MOVEMENTS_SQL):
        reference = _PREFIX[row["kind"]] + str(row["ref_id"])
        in_ledger[reference] = int(row["amount_fen"])
        if row["postings"] != 1:
            found.append(f"{reference}: {row['postings']} postings on core_settlement")
    for reference, status in ours.items():
        record = at_core.get(reference)
        moved = record["amount_fen"] if record and record["status"] == "succeeded" else None
        booked = in_ledger.get(reference)
        if moved != booked:
            found.append(f"{reference} ({status}): core moved {moved}, the ledger booked {booked}")
        if record and record["status"] == "succeeded" and status == "failed":
            found.append(f"{reference}: core moved the money, ours says failed")
    return found


_OPEN_SQL = """
SELECT (SELECT count(*) FROM loan WHERE status = 'disbursing')
     + (SELECT count(*) FROM repayment WHERE status = 'processing')
     + (SELECT count(*) FROM outbox WHERE kind IN ('disburse', 'debit')
                                    AND state IN ('pending', 'sending', 'unknown'))
"""


async def open_movements(dsns: list[str]) -> int:
    """Loans still disbursing, repayments processing, money rows not yet carried out."""
    total = 0
    for dsn in dsns:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            total += int(await conn.fetchval(_OPEN_SQL))
        finally:
            await conn.close()
    return total


async def wait_settled(dsns: list[str], timeout_s: float = 90.0) -> None:
    """Until the relay has carried out every money movement of `dsns` (bounded)."""
    left = await eventually(
        lambda: open_movements(dsns), lambda n: n == 0, timeout_s=timeout_s, interval_s=0.2
    )
    assert left == 0, f"{left} money movements still open after {timeout_s} s"


async def problems(
    dsns: list[str],
    http: aiohttp.ClientSession | None = None,
    core_url: str | None = None,
    accrued_through: dt.date | None = None,
) -> list[str]:
    """Every invariant on every shard of `dsns`; the money check when the core is given."""
    at_core = await core_records(http, core_url) if http and core_url else None
    found: list[str] = []
    for dsn in dsns:
        name = dsn.rsplit("/", 1)[1]
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            found += [f"{name}: {p}" for p in await books.problems(conn, accrued_through)]
            found += [f"{name}: {p}" for p in await plan_problems(conn)]
            if at_core is not None:
                found += [f"{name}: {p}" for p in await money_problems(conn, at_core)]
        finally:
            await conn.close()
    return found


__all__ = [
    "core_records",
    "money_problems",
    "open_movements",
    "plan_problems",
    "problems",
    "wait_settled",
]

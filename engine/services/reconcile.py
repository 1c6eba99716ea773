"""Reconciliation (对账): core banking's transaction file against our ledger.

    core statement of day D (succeeded rows)       ledger: every posting of day D that
    reference  kind     amount                     moved core_settlement
    D<loan>    payment  5000.00   <── match ──►    disbursement  ref loan      5000.00
    R<repay>   debit    1234.56   <── match ──►    repayment     ref repayment 1234.56

A break is a reference on one side only, or the same reference with another
amount. Days are Asia/Shanghai calendar days on both sides; a movement booked
by core just before midnight and posted by us just after shows as two breaks
on consecutive days (rare; the next day's run pairs them by hand).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import msgspec

from engine.adapters.core_bank import CoreBank

_KIND_PREFIX = {"disbursement": "D", "repayment": "R"}

_LEDGER_SQL = """
SELECT t.kind, t.ref_id, abs(l.amount_fen) AS amount_fen
FROM ledger_txn t JOIN ledger_leg l USING (txn_id)
WHERE l.code = 'core_settlement' AND t.kind IN ('disbursement', 'repayment')
  AND t.created_at >= ($1::date::timestamp AT TIME ZONE 'Asia/Shanghai')
  AND t.created_at < (($1::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
"""


class Break(msgspec.Struct, frozen=True):
    reference: str
    problem: str  # missing_in_ledger | missing_at_core | amount_differs
    core_amount_fen: int | None
    ledger_amount_fen: int | None


class Report(msgspec.Struct, frozen=True):
    day: dt.date
    matched: int
    breaks: list[Break]


async def ledger_movements(dsns: list[str], day: dt.date) -> dict[str, int]:
    async def one(dsn: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return list(await conn.fetch(_LEDGER_SQL, day))
        finally:
            await conn.close()

    movements: dict[str, int] = {}
    for rows in await asyncio.gather(*(one(dsn) for dsn in dsns)):
        for row in rows:
            reference = _KIND_PREFIX[row["kind"]] + str(row["ref_id"])
            movements[reference] = movements.get(reference, 0) + int(row["amount_fen"])
    return movements


async def reconcile(core: CoreBank, dsns: list[str], day: dt.date) -> Report:
    statement = await core.statement(day)
    at_core = {row.reference: row.amount_fen for row in statement if row.status == "succeeded"}
    in_ledger = await ledger_movements(dsns, day)
    breaks = []
    for reference in sorted(at_core.keys() | in_ledger.keys()):
        core_fen, ledger_fen = at_core.get(reference), in_ledger.get(reference)
        if core_fen is None:
            breaks.append(Break(reference, "missing_at_core", None, ledger_fen))
        elif ledger_fen is None:
            breaks.append(Break(reference, "missing_in_ledger", core_fen, None))
        elif core_fen != ledger_fen:
            breaks.append(Break(reference, "amount_differs", core_fen, ledger_fen))
    matched = len(at_core.keys() & in_ledger.keys()) - sum(
        b.problem == "amount_differs" for b in breaks
    )
    return Report(day, matched, breaks)

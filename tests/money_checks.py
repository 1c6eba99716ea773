"""Where a test reads what money did, from outside the engine: a loan's accounts in the
ledger, the postings of one repayment, the fake core's records, the business date each
engine worker sees. Expected figures come from the test (tests/money_by_hand.py)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from engine.settings import Settings
from ledger.store import trial_balance
from sharding.ids import shard_of_id
from tests.api_client import ApiClient
from tests.waiting import eventually


@asynccontextmanager
async def shard_of(settings: Settings, customer_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the shard database that holds `customer_id` (and its loans)."""
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass(frozen=True)
class LoanBooks:
    """A loan's accounts, debit balances in fen (a credit balance is negative)."""

    principal: int
    interest_receivable: int
    penalty_receivable: int


async def loan_books(conn: asyncpg.Connection, loan_id: str) -> LoanBooks:
    rows = await conn.fetch(
        """SELECT code, debit_total_fen - credit_total_fen AS balance,
                  (SELECT coalesce(sum(amount_fen), 0) FROM ledger_leg g
                   WHERE g.code = a.code AND g.owner_id = a.owner_id) AS legs
           FROM ledger_account a WHERE owner_id = $1""",
        int(loan_id),
    )
    balances = {}
    for row in rows:
        assert row["balance"] == row["legs"], dict(row)  # the account's totals are its legs
        balances[row["code"]] = int(row["balance"])
    # Accrued interest is a sub-ledger under a control account (ledger migration 0023):
    # the loan's own account is not posted to any more.
    assert balances.get("loan_interest_receivable", 0) == 0, balances
    interest = await conn.fetchval(
        """SELECT coalesce(sum(interest_accrued_fen - interest_settled_fen), 0)
           FROM loan_accrual WHERE loan_id = $1""",
        int(loan_id),
    )
    return LoanBooks(
        balances.get("loan_principal", 0),
        int(interest),
        balances.get("loan_penalty_receivable", 0),
    )


async def postings_of(conn: asyncpg.Connection, kind: str, ref_id: str) -> list[dict[str, int]]:
    """Each ledger transaction of `kind` on `ref_id` (a repayment, a loan): its legs summed
    by account code, loan accounts as 'code:loan'; every one must sum to zero."""
    rows = await conn.fetch(
        """SELECT t.txn_id, g.code, g.owner_id, c.scope, g.amount_fen
           FROM ledger_txn t JOIN ledger_leg g ON g.txn_id = t.txn_id
           JOIN ledger_chart c ON c.code = g.code
           WHERE t.kind = $1 AND t.ref_id = $2 ORDER BY t.txn_id, g.leg_no""",
        kind,
        int(ref_id),
    )
    by_txn: dict[int, dict[str, int]] = {}
    for row in rows:
        name = row["code"] if row["scope"] == "internal" else f"{row['code']}:{row['owner_id']}"
        legs = by_txn.setdefault(row["txn_id"], {})
        legs[name] = legs.get(name, 0) + int(row["amount_fen"])
    for legs in by_txn.values():
        assert sum(legs.values()) == 0, legs
    return list(by_txn.values())


def repayment_legs(
    total: int, loans: dict[str, tuple[int, int, int]], *, charges: dict[str, int] | None = None
) -> dict[str, int]:
    """The one posting a succeeded repayment books, as `postings_of` shows it, when no
    loan is settled by it: Dr core_settlement the cash; per loan (penalty, interest,
    principal) paid, Cr its principal and penalty receivable, and the interest of all
    Cr the accrued-interest control account; the charges it booked for its own day
    (penalty and compound) Dr the penalty receivable / Cr penalty income."""
    legs = {"core_settlement": total}
    penalty_income = accrued = 0
    for loan_id, (penalty, interest, principal) in loans.items():
        booked = (charges or {}).get(loan_id, 0)
        penalty_income -= booked
        accrued -= interest
        for code, amount in (("loan_principal", -principal),
                             ("loan_penalty_receivable", booked - penalty)):  # fmt: skip
            if amount:
                legs[f"{code}:{loan_id}"] = amount
    if accrued:
        legs["accrued_interest_receivable"] = accrued
    if penalty_income:
        legs["penalty_income"] = penalty_income
    return legs


async def core_records(http: aiohttp.ClientSession, core_url: str) -> list[dict[str, Any]]:
    async with http.get(f"{core_url}/fake/records") as resp:
        assert resp.status == 200, await resp.text()
        records: list[dict[str, Any]] = await resp.json()
    return records


async def debits_at_core(
    http: aiohttp.ClientSession, core_url: str, card: str, since: str
) -> list[dict[str, Any]]:
    """Every debit core recorded on `card` (its last four digits) since `since` (core's
    booking time, ISO +08:00, as `core_clock` gives it): what a doubled debit would show
    whatever reference it went under."""
    return [
        r
        for r in await core_records(http, core_url)
        if r["kind"] == "debit" and r["card_last4"] == card[-4:] and r["booked_at"] >= since
    ]


def core_clock() -> str:
    """Now, as the fake core stamps its records (Asia/Shanghai, milliseconds)."""
    now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+08:00"


async def duplicate_requests(http: aiohttp.ClientSession, core_url: str) -> float:
    """Payment or debit requests core saw again for a reference it already had."""

    async with http.get(f"{core_url}/metrics") as resp:
        text = await resp.text()
    pattern = (
        r'fake_core_requests_total\{endpoint="(payments|debits)(_batch)?",'
        r'outcome="duplicate"\} ([0-9.e+]+)'
    )
    return sum(float(m.group(3)) for m in re.finditer(pattern, text))


async def set_knobs(http: aiohttp.ClientSession, base_url: str, **knobs: Any) -> None:
    async with http.post(f"{base_url}/fake/knobs", json=knobs) as resp:
        assert resp.status == 200, await resp.text()


async def engine_sees_date(base_url: str, probe_loan: str, day: dt.date, probes: int = 12) -> bool:
    """Whether every worker of the engine at `base_url` works on `day`: `probes` answers in
    a row, each on a fresh connection (the kernel spreads them over the workers), quote
    `probe_loan`'s payoff on `day`."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        api = ApiClient(session, base_url)
        for _ in range(probes):
            reply = await api.get(f"/v1/loans/{probe_loan}/payoff-quote")
            if reply.status != 200 or reply.json["on"] != day.isoformat():
                return False
    return True


async def set_business_date(
    control_conn: asyncpg.Connection, base_url: str, probe_loan: str, day: dt.date
) -> None:
    """Move the one business date and wait until the engine's workers all work on it
    (they reload reference data every 0.2 s in tests; bounded generously)."""
    await control_conn.execute("UPDATE business_clock SET business_date = $1", day)
    seen = await eventually(
        lambda: engine_sees_date(base_url, probe_loan, day), bool, timeout_s=30, interval_s=0.1
    )
    assert seen, f"the engine did not take up the business date {day} in 30 s"


__all__ = [
    "LoanBooks",
    "core_clock",
    "core_records",
    "debits_at_core",
    "duplicate_requests",
    "engine_sees_date",
    "loan_books",
    "postings_of",
    "repayment_legs",
    "set_business_date",
    "set_knobs",
    "shard_of",
]


async def unbalanced_shards(settings: Settings) -> list[str]:
    """The shards whose trial balance (deep: every account against its legs) is off."""
    off = []
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            if not (await trial_balance(conn, deep=True)).balanced:
                off.append(shard.name)
        finally:
            await conn.close()
    return off

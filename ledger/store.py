"""The ledger's SQL: posting inside the caller's transaction, balances, trial balance.

`post()` writes a whole posting in one round trip (the `ledger_post` function):
the transaction row, its legs, and the running totals of every account it
touches (upserted, so a loan's accounts come into being with its first
posting). Accounts are locked in (code, owner_id) order, so two postings never
deadlock on them.
"""

from __future__ import annotations

import asyncpg
import msgspec

from ledger.chart import CHART, INTERNAL_STRIPES, Code, is_internal
from ledger.postings import Posting, check_legs

# The statements live in `ledger_post` (ledger/migrations/0006_one_call_booking.sql),
# which `book_drawdown` calls too: one definition of how a posting is written.
_POST_SQL = "SELECT ledger_post($1, $2, $3, $4, $5, $6, $7, $8, $9)"


class AccountBalance(msgspec.Struct, frozen=True):
    code: str
    owner_id: int | None
    debit_total_fen: int
    credit_total_fen: int

    @property
    def balance_fen(self) -> int:
        """Debit balance (debits minus credits); negative for credit-normal accounts."""
        return self.debit_total_fen - self.credit_total_fen


class TrialBalance(msgspec.Struct, frozen=True):
    """Debits and credits of one shard, by account totals and, if deep, by legs."""

    debit_total_fen: int
    credit_total_fen: int
    legs_sum_fen: int | None = None
    accounts_differing_from_legs: int | None = None
    # The accrued-interest control account less the sum of its sub-ledger (loan_accrual).
    subledger_difference_fen: int | None = None

    @property
    def imbalance_fen(self) -> int:
        return self.debit_total_fen - self.credit_total_fen

    @property
    def balanced(self) -> bool:
        return (
            self.imbalance_fen == 0
            and self.legs_sum_fen in (None, 0)
            and self.accounts_differing_from_legs in (None, 0)
        )

    @property
    def subledger_agrees(self) -> bool:
        """The accrued-interest control account equals its sub-ledger (if deep)."""
        return self.subledger_difference_fen in (None, 0)


async def ensure_chart(conn: asyncpg.Connection) -> None:
    """Make the chart and the internal accounts' stripes exist (idempotent)."""
    await conn.executemany(
        """INSERT INTO ledger_chart (code, name_zh, kind, scope) VALUES ($1, $2, $3, $4)
           ON CONFLICT (code) DO UPDATE SET name_zh = excluded.name_zh""",
        [(str(s.code), s.name_zh, s.kind.value, s.scope.value) for s in CHART.values()],
    )
    await conn.execute(
        """INSERT INTO ledger_account (code, owner_id)
           SELECT code, stripe FROM unnest($1::text[]) AS code, generate_series(0, $2 - 1) AS stripe
           ON CONFLICT DO NOTHING""",
        [str(code) for code in Code if is_internal(code)],
        INTERNAL_STRIPES,
    )


def posting_args(posting: Posting) -> tuple[object, ...]:
    """The arguments of `ledger_post` for one posting (also used by bulk seeding)."""
    check_legs(posting.legs)
    stripe = posting.stripe()
    codes: list[str] = []
    owners: list[int] = []
    customers: list[int | None] = []
    amounts: list[int] = []
    for leg in posting.legs:
        codes.append(str(leg.code))
        if leg.owner_id is None:
            owners.append(stripe)
            customers.append(None)
        else:
            owners.append(leg.owner_id)
            customers.append(posting.customer_id if leg.customer_id is None else leg.customer_id)
        amounts.append(leg.amount_fen)
    return (
        posting.txn_id,
        posting.customer_id,
        posting.kind,
        posting.ref_id,
        posting.business_date,
        codes,
        owners,
        customers,
        amounts,
    )


async def post(conn: asyncpg.Connection, posting: Posting) -> None:
    """Write `posting` inside the caller's open transaction (asserted)."""
    assert conn.is_in_transaction(), "a posting is written inside the business transaction"
    await conn.execute(_POST_SQL, *posting_args(posting))


_POST_MANY_SQL = "SELECT ledger_post_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"


async def post_many(conn: asyncpg.Connection, postings: list[Posting]) -> None:
    """Write several postings of one business date in one call, inside the caller's
    transaction (a day-end chunk's: one posting per LEGS_MAX − 1 loans)."""
    assert conn.is_in_transaction(), "postings are written inside the business transaction"
    if not postings:
        return
    day = postings[0].business_date
    assert all(p.business_date == day for p in postings), "one business date per call"
    heads: tuple[list[object], ...] = ([], [], [], [])
    legs: tuple[list[object], ...] = ([], [], [], [], [])
    for posting in postings:
        args = posting_args(posting)
        for column, value in zip(heads, (args[0], args[1], args[2], args[3]), strict=True):
            column.append(value)
        codes = args[5]
        assert isinstance(codes, list)
        legs[0].extend([posting.txn_id] * len(codes))
        for column, values in zip(legs[1:], args[5:], strict=True):
            assert isinstance(values, list)
            column.extend(values)
    await conn.execute(_POST_MANY_SQL, *heads, day, *legs)


async def account_balance(
    conn: asyncpg.Connection, code: Code, owner_id: int | None
) -> AccountBalance:
    """One loan account, or the sum of an internal account's stripes (owner_id None)."""
    if owner_id is None:
        assert is_internal(code), code
        row = await conn.fetchrow(
            """SELECT coalesce(sum(debit_total_fen), 0)::bigint AS d,
                      coalesce(sum(credit_total_fen), 0)::bigint AS c
               FROM ledger_account WHERE code = $1""",
            str(code),
        )
    else:
        row = await conn.fetchrow(
            """SELECT debit_total_fen AS d, credit_total_fen AS c
               FROM ledger_account WHERE code = $1 AND owner_id = $2""",
            str(code),
            owner_id,
        )
    if row is None:
        return AccountBalance(str(code), owner_id, 0, 0)
    return AccountBalance(str(code), owner_id, int(row["d"]), int(row["c"]))


async def trial_balance(conn: asyncpg.Connection, *, deep: bool = False) -> TrialBalance:
    """Totals over every account; `deep` also re-adds every leg (a full scan) and sets the
    accrued-interest control account against its sub-ledger (ledger migration 0023)."""
    row = await conn.fetchrow(
        """SELECT coalesce(sum(debit_total_fen), 0)::bigint AS d,
                  coalesce(sum(credit_total_fen), 0)::bigint AS c FROM ledger_account"""
    )
    assert row is not None
    if not deep:
        return TrialBalance(int(row["d"]), int(row["c"]))
    legs_sum = await conn.fetchval("SELECT coalesce(sum(amount_fen), 0)::bigint FROM ledger_leg")
    differing = await conn.fetchval(
        """SELECT count(*) FROM ledger_account a
           LEFT JOIN (SELECT code, owner_id,
                             sum(greatest(amount_fen, 0)) AS d, sum(greatest(-amount_fen, 0)) AS c
                      FROM ledger_leg GROUP BY code, owner_id) l
             USING (code, owner_id)
           WHERE a.debit_total_fen <> coalesce(l.d, 0) OR a.credit_total_fen <> coalesce(l.c, 0)"""
    )
    subledger = await conn.fetchval(
        """SELECT (SELECT coalesce(sum(debit_total_fen - credit_total_fen), 0) FROM ledger_account
                   WHERE code = 'accrued_interest_receivable')
                - (SELECT coalesce(sum(interest_accrued_fen - interest_settled_fen), 0)
                   FROM loan_accrual)"""
    )
    return TrialBalance(int(row["d"]), int(row["c"]), int(legs_sum), int(differing), int(subledger))


async def account_balances(conn: asyncpg.Connection) -> dict[str, int]:
    """Each account code's balance on this shard (debits minus credits, fen): the trial
    balance by account, which the reports reconcile to (engine.reports)."""
    rows = await conn.fetch(
        """SELECT code, sum(debit_total_fen - credit_total_fen)::bigint AS fen
           FROM ledger_account GROUP BY code ORDER BY code"""
    )
    return {str(r["code"]): int(r["fen"]) for r in rows}

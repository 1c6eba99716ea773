"""The pair rule, checked by the code and again by the database; append-only history."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.chart import Code
from ledger.postings import InvalidLegError, Leg, Posting, UnbalancedPostingError, reversal
from ledger.store import account_balance, post, post_many, trial_balance
from tests.ledger_helpers import TODAY, fresh_id, two_leg


async def _txn_rows(conn: asyncpg.Connection, txn_id: int) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM ledger_txn WHERE txn_id = $1", txn_id))


def test_code_refuses_unbalanced_posting() -> None:
    legs = (Leg(Code.LOAN_PRINCIPAL, 1, 100), Leg(Code.DISBURSEMENT_CLEARING, None, -99))
    with pytest.raises(UnbalancedPostingError, match="sum to 1"):
        Posting(1, 1, "t", None, TODAY, legs)
    with pytest.raises(UnbalancedPostingError, match=r"2\.\.64 legs"):
        Posting(1, 1, "t", None, TODAY, legs[:1])


@pytest.mark.parametrize(
    "legs",
    [
        (Leg(Code.LOAN_PRINCIPAL, 1, 0), Leg(Code.DISBURSEMENT_CLEARING, None, 0)),
        (Leg(Code.LOAN_PRINCIPAL, None, 5), Leg(Code.DISBURSEMENT_CLEARING, None, -5)),
        (Leg(Code.LOAN_PRINCIPAL, 1, 5), Leg(Code.DISBURSEMENT_CLEARING, 3, -5)),
        (Leg(Code.LOAN_PRINCIPAL, 1, True), Leg(Code.DISBURSEMENT_CLEARING, None, -1)),
    ],
)
def test_code_refuses_invalid_legs(legs: tuple[Leg, ...]) -> None:
    with pytest.raises(InvalidLegError):
        Posting(1, 1, "t", None, TODAY, legs)


async def test_database_refuses_unbalanced_transaction(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    conn = shard_conns["shard_0"]
    before = await trial_balance(conn, deep=True)
    txn_id, loan_id = fresh_id(), fresh_id()
    await post_ok(conn, two_leg(loan_id, 1, 100))  # the loan account exists from here on
    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO ledger_txn (txn_id, kind, business_date) VALUES ($1, 'forced', $2)",
                txn_id,
                TODAY,
            )
            await conn.execute(
                """INSERT INTO ledger_leg (txn_id, leg_no, code, owner_id, amount_fen)
                   VALUES ($1, 1, 'loan_principal', $2, 700)""",
                txn_id,
                loan_id,
            )
    assert await _txn_rows(conn, txn_id) == 0
    # A transaction row without legs is refused too.
    with pytest.raises(asyncpg.CheckViolationError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO ledger_txn (txn_id, kind, business_date) VALUES ($1, 'empty', $2)",
                txn_id,
                TODAY,
            )
    assert await _txn_rows(conn, txn_id) == 0
    after = await trial_balance(conn, deep=True)
    assert after.balanced
    assert after.debit_total_fen - before.debit_total_fen == 100


async def test_legs_cannot_be_added_to_a_committed_transaction(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    conn = shard_conns["shard_1"]
    posting = two_leg(fresh_id(), 1, 250)
    await post_ok(conn, posting)
    with pytest.raises(asyncpg.CheckViolationError):
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO ledger_leg (txn_id, leg_no, code, owner_id, amount_fen)
                   VALUES ($1, 9, 'loan_principal', $2, 1)""",
                posting.txn_id,
                posting.ref_id,
            )


async def test_a_leg_added_after_an_early_check_is_checked_again(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    """The pair check sums a transaction's legs once per database transaction; a leg
    added after that sum (SET CONSTRAINTS IMMEDIATE fired it early) is summed again."""
    conn = shard_conns["shard_3"]
    posting = two_leg(fresh_id(), 1, 300)
    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        async with conn.transaction():
            await post(conn, posting)
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # checked now: balanced
            await conn.execute("SET CONSTRAINTS ALL DEFERRED")
            await conn.execute(
                """INSERT INTO ledger_leg (txn_id, leg_no, code, owner_id, amount_fen)
                   VALUES ($1, 3, 'loan_principal', $2, 5)""",
                posting.txn_id,
                posting.ref_id,
            )
    assert await _txn_rows(conn, posting.txn_id) == 0


async def test_a_posting_of_many_legs_is_checked_once_and_still_refused_unbalanced(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    conn = shard_conns["shard_0"]
    loans = [fresh_id() for _ in range(1500)]
    txn_id = fresh_id()
    legs = [Leg(Code.LOAN_INTEREST_RECEIVABLE, loan, 7, loan) for loan in loans]
    good = Posting(
        txn_id, None, "many", None, TODAY, (*legs[:63], Leg(Code.INTEREST_INCOME, None, -441))
    )
    async with conn.transaction():
        await post_many(conn, [good])
    codes = ["loan_interest_receivable"] * len(loans) + ["interest_income"]
    amounts = [7] * len(loans) + [-7 * len(loans) + 1]  # one fen out
    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        async with conn.transaction():
            await conn.execute(
                "SELECT ledger_post($1, NULL, 'many', NULL, $2, $3, $4, $5, $6)",
                fresh_id(), TODAY, codes, [*loans, 0], [*loans, None], amounts,
            )  # fmt: skip


async def test_history_is_append_only(shard_conns: dict[str, asyncpg.Connection]) -> None:
    conn = shard_conns["shard_2"]
    posting = two_leg(fresh_id(), 1, 300)
    await post_ok(conn, posting)
    for sql in (
        "UPDATE ledger_leg SET amount_fen = amount_fen * 2 WHERE txn_id = $1",
        "DELETE FROM ledger_leg WHERE txn_id = $1",
        "DELETE FROM ledger_txn WHERE txn_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql, posting.txn_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("TRUNCATE ledger_leg CASCADE")


async def test_reversal_restores_balances(shard_conns: dict[str, asyncpg.Connection]) -> None:
    conn = shard_conns["shard_3"]
    loan_id = fresh_id()
    original = two_leg(loan_id, 9, 12_345)
    await post_ok(conn, original)
    await post_ok(conn, reversal(original, fresh_id(), "void", TODAY))
    balance = await account_balance(conn, Code.LOAN_PRINCIPAL, loan_id)
    assert (balance.debit_total_fen, balance.credit_total_fen, balance.balance_fen) == (
        12_345,
        12_345,
        0,
    )


async def test_post_requires_an_open_transaction(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    with pytest.raises(AssertionError):
        await post(shard_conns["shard_0"], two_leg(fresh_id(), 1, 1))


async def post_ok(conn: asyncpg.Connection, posting: Posting) -> None:
    async with conn.transaction():
        await post(conn, posting)

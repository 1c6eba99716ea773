"""Group booking in the database (`book_drawdowns`, ledger migrations 0010 and 0011): each
drawdown of a call is booked exactly as it would be alone, or answered "recheck" /
"replay" with nothing of it written, whatever the others in the call do. The single
`book_drawdown` of earlier versions is now a wrapper of it and books the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.migrate import SHARD_MIGRATIONS
from engine.services.booking_batch import (
    ARGS,
    BATCH_SQL,
    array_literal,
    batch_args,
    book_alone,
)
from loadtest.bench_book import booking_args, prepare
from tests.waiting import eventually

LINES = 6
LOAN_ID, CUSTOMER_ID, CAP_GROUP, CAP_MAX = 10, 11, 8, 9  # a drawdown's argument order
# The single booking of earlier versions (0006/0009), a wrapper of book_drawdowns since 0011.
# (It takes no nonce: the last of a drawdown's arguments is the group call's.)
SINGLE_SQL = "SELECT book_drawdown({})".format(", ".join(f"${n}" for n in range(1, ARGS)))


@pytest.fixture
async def shard(scratch_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(scratch_db)
    await prepare(conn, SHARD_MIGRATIONS, LINES)
    yield conn
    await conn.close()


def _id(value: object) -> int:
    assert isinstance(value, int)
    return value


def _with(args: tuple[object, ...], index: int, value: object) -> tuple[object, ...]:
    return (*args[:index], value, *args[index + 1 :])


async def _book(conn: asyncpg.Connection, items: list[tuple[object, ...]]) -> list[str]:
    return list(await conn.fetchval(BATCH_SQL, *batch_args(items)))


async def _loan_ids(conn: asyncpg.Connection) -> set[int]:
    return {row[0] for row in await conn.fetch("SELECT loan_id FROM loan")}


async def _used(conn: asyncpg.Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT credit_line_id, used_fen FROM credit_line")
    return {row[0]: row[1] for row in rows}


async def _assert_books_agree(conn: asyncpg.Connection, loan_ids: set[int]) -> None:
    """Every booked loan has its plan, its payment order, its idempotency record and a
    balanced posting; nothing else exists."""
    assert await _loan_ids(conn) == loan_ids
    for table in ("loan_plan", "outbox"):
        column = "ref_id" if table == "outbox" else "loan_id"
        found = {row[0] for row in await conn.fetch(f"SELECT {column} FROM {table}")}
        assert found == loan_ids, table
    assert await conn.fetchval("SELECT count(*) FROM idempotency_record") == len(loan_ids)
    txns = await conn.fetch(
        """SELECT t.ref_id, sum(l.amount_fen) AS total, count(*) AS legs
           FROM ledger_txn t JOIN ledger_leg l USING (txn_id) GROUP BY t.txn_id, t.ref_id"""
    )
    assert {row["ref_id"] for row in txns} == loan_ids
    assert all(row["total"] == 0 and row["legs"] == 2 for row in txns)


async def test_a_call_books_each_drawdown_as_one_booking_would(
    shard: asyncpg.Connection,
) -> None:
    alone = booking_args(0, line_id=1)
    assert await shard.fetchval(SINGLE_SQL, *alone[:-1]) == "booked"
    items = [booking_args(n, line_id=line) for n, line in ((1, 2), (2, 3), (3, 4))]
    assert await _book(shard, items) == ["booked"] * 3
    await _assert_books_agree(shard, {_id(args[LOAN_ID]) for args in [alone, *items]})
    # The plan written from array literals is the plan the single call writes.
    plans = await shard.fetch(
        """SELECT seq, due_date, principal_fen, interest_fen, balance_after_fen,
                  principal_paid_fen, interest_paid_fen, penalty_unpaid_fen,
                  compound_unpaid_fen, accrued_through, penalty_paid_fen
           FROM loan_plan ORDER BY loan_id"""
    )
    assert len({tuple(tuple(column) for column in plan) for plan in plans}) == 1
    used = await _used(shard)
    assert used == {1: 1_200_000, 2: 1_200_000, 3: 1_200_000, 4: 1_200_000, 5: 0, 6: 0}


async def test_a_second_drawdown_on_a_line_or_key_is_sent_back(
    shard: asyncpg.Connection,
) -> None:
    first, same_line = booking_args(0, line_id=1), booking_args(1, line_id=1)
    same_key = _with(booking_args(2, line_id=2), 1, first[1])
    assert await _book(shard, [first, same_line, same_key, booking_args(3, line_id=3)]) == [
        "booked", "recheck", "recheck", "booked"
    ]  # fmt: skip
    await _assert_books_agree(
        shard, {_id(first[LOAN_ID]), _id(booking_args(3, line_id=3)[LOAN_ID])}
    )
    assert (await _used(shard))[1] == 1_200_000


async def test_a_recorded_key_replays_and_the_others_book(shard: asyncpg.Connection) -> None:
    earlier = booking_args(0, line_id=1)
    assert await shard.fetchval(SINGLE_SQL, *earlier[:-1]) == "booked"
    twin = _with(booking_args(1, line_id=2), 1, earlier[1])  # the same key, its own loan ids
    assert await _book(shard, [twin, booking_args(2, line_id=3)]) == ["replay", "booked"]
    await _assert_books_agree(
        shard, {_id(earlier[LOAN_ID]), _id(booking_args(2, line_id=3)[LOAN_ID])}
    )
    assert (await _used(shard))[2] == 0


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE credit_line SET status = 'frozen' WHERE credit_line_id = 2",
        "UPDATE credit_line SET annual_rate_pct = 7.3 WHERE credit_line_id = 2",
        "UPDATE credit_line SET expires_on = '2026-11-29' WHERE credit_line_id = 2",
        "UPDATE credit_line SET limit_fen = 1199999 WHERE credit_line_id = 2",
        "DELETE FROM credit_line WHERE credit_line_id = 2",
    ],
)
async def test_a_line_that_changed_is_rechecked_alone(
    shard: asyncpg.Connection, change: str
) -> None:
    await shard.execute(change)
    items = [booking_args(0, line_id=1), booking_args(1, line_id=2), booking_args(2, line_id=3)]
    assert await _book(shard, items) == ["booked", "recheck", "booked"]
    await _assert_books_agree(shard, {_id(items[0][LOAN_ID]), _id(items[2][LOAN_ID])})


async def test_a_customer_over_the_cap_is_rechecked(shard: asyncpg.Connection) -> None:
    def capped(n: int, line: int, cap_fen: int) -> tuple[object, ...]:
        return _with(_with(booking_args(n, line_id=line), CAP_GROUP, "consumer"), CAP_MAX, cap_fen)

    # Customer 1 already owes 12,000.00 in the group: 12,000.00 more would pass 20,000.00.
    assert await shard.fetchval(SINGLE_SQL, *capped(0, 1, 2_000_000)[:-1]) == "booked"
    items = [capped(1, 1, 2_000_000), capped(2, 2, 2_400_000), capped(3, 3, 1_000_000)]
    assert await _book(shard, items) == ["recheck", "booked", "recheck"]
    # A capped customer's second drawdown in one call waits for the next call.
    again = [capped(4, 4, 9_000_000), _with(capped(5, 5, 9_000_000), CUSTOMER_ID, 4)]
    assert (await _book(shard, again))[1] == "recheck"


async def test_a_call_with_nothing_to_book_writes_nothing(shard: asyncpg.Connection) -> None:
    await shard.execute("UPDATE credit_line SET status = 'frozen'")
    assert await _book(shard, [booking_args(0, line_id=1), booking_args(1, line_id=2)]) == [
        "recheck",
        "recheck",
    ]
    await _assert_books_agree(shard, set())


def test_array_literals_carry_numbers_dates_and_nulls() -> None:
    import datetime as dt

    assert array_literal([1, -2, 30]) == "{1,-2,30}"
    assert array_literal([dt.date(2026, 1, 31), None]) == "{2026-01-31,NULL}"
    assert array_literal([]) == "{}"


async def test_array_literals_round_trip_through_the_database(shard: asyncpg.Connection) -> None:
    import datetime as dt

    dates = [dt.date(2026, 1, 31), None, dt.date(2027, 12, 1)]
    assert await shard.fetchval("SELECT $1::text::date[]", array_literal(dates)) == dates
    numbers = [0, -(2**63), 2**63 - 1]
    assert await shard.fetchval("SELECT $1::text::bigint[]", array_literal(numbers)) == numbers


async def test_a_capped_and_an_uncapped_drawdown_of_one_customer_are_not_booked_together(
    shard: asyncpg.Connection,
) -> None:
    await shard.execute(
        """INSERT INTO credit_line (credit_line_id, customer_id, tenant_id, product_code,
               limit_fen, annual_rate_pct, repayment_methods, max_term_months, expires_on)
           VALUES (11, 1, 'demo', 'demo-credit', 9000000000000000, 7.2, '{equal_installment}',
               36, '2030-01-01')"""
    )
    capped = _with(_with(booking_args(0, line_id=1), CAP_GROUP, "consumer"), CAP_MAX, 1_500_000)
    uncapped = booking_args(1, line_id=11, customer_id=1)
    assert await _book(shard, [uncapped, capped]) == ["booked", "recheck"]


async def test_arrays_of_unequal_length_are_refused(shard: asyncpg.Connection) -> None:
    arrays = batch_args([booking_args(0, line_id=1), booking_args(1, line_id=2)])
    arrays[CAP_MAX] = [None]  # one cap for two drawdowns
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unequal length"):
        await shard.fetchval(BATCH_SQL, *arrays)
    legs = batch_args([booking_args(0, line_id=1), booking_args(1, line_id=2)])
    legs[-5] = legs[-5][:-1]  # one amount short (then the payment orders, time-out, nonces)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unequal length"):
        await shard.fetchval(BATCH_SQL, *legs)
    assert await _loan_ids(shard) == set()


async def test_calls_crossing_customers_do_not_wait_on_each_other(
    shard: asyncpg.Connection, scratch_db: str
) -> None:
    """Customer 1's capped drawdown with customer 2's uncapped one, against customer 2's
    capped with customer 1's uncapped, at the same time: every customer is locked in id
    order before any loan's foreign key locks one, so neither call times out."""
    await shard.execute(
        """INSERT INTO credit_line (credit_line_id, customer_id, tenant_id, product_code,
               limit_fen, annual_rate_pct, repayment_methods, max_term_months, expires_on)
           SELECT 10 + c, 3 - c, 'demo', 'demo-credit', 9000000000000000, 7.2,
               '{equal_installment}', 36, '2030-01-01' FROM generate_series(1, 2) AS c"""
    )

    def capped(n: int, line: int) -> tuple[object, ...]:
        return _with(_with(booking_args(n, line_id=line), CAP_GROUP, "consumer"), CAP_MAX, 10**15)

    other = await asyncpg.connect(scratch_db)
    try:
        for round_no in range(10):
            n = 10 * round_no
            one = [capped(n, 1), booking_args(n + 1, line_id=11, customer_id=2)]
            two = [capped(n + 2, 2), booking_args(n + 3, line_id=12, customer_id=1)]
            outcomes = await asyncio.gather(_book(shard, one), _book(other, two))
            assert outcomes == [["booked", "booked"], ["booked", "booked"]]
    finally:
        await other.close()


async def test_the_locked_path_books_without_an_idempotency_record(
    shard: asyncpg.Connection,
) -> None:
    """The engine's locked path writes the record itself, in the same transaction."""
    args = _with(_with(_with(booking_args(0, line_id=1), 0, None), 1, None), 44, None)
    async with shard.transaction():
        assert await book_alone(shard, args) == "booked"
    assert await _loan_ids(shard) == {_id(args[LOAN_ID])}
    assert await shard.fetchval("SELECT count(*) FROM idempotency_record") == 0


async def test_a_group_call_waits_briefly_for_a_lock_the_locked_path_as_long_as_needed(
    shard: asyncpg.Connection, scratch_db: str
) -> None:
    holder = await asyncpg.connect(scratch_db)
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM credit_line WHERE credit_line_id = 1 FOR UPDATE")
        started = asyncio.get_running_loop().time()
        with pytest.raises(asyncpg.LockNotAvailableError):
            await _book(shard, [booking_args(0, line_id=1)])
        assert asyncio.get_running_loop().time() - started < 5
        # The time-out was the call's own transaction's: the session's setting is back.
        assert await shard.fetchval("SHOW lock_timeout") == "0"
        assert await _loan_ids(shard) == set()

        async def alone() -> str:
            async with shard.transaction():
                return await book_alone(shard, booking_args(1, line_id=1))

        booking = asyncio.create_task(alone())

        async def blocked() -> bool:
            await holder.execute("SELECT pg_stat_clear_snapshot()")
            return bool(await holder.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                shard.get_server_pid(),
            ))  # fmt: skip

        # Once it waits for the line's lock, it keeps waiting past the group call's 250 ms.
        assert await eventually(blocked, bool, timeout_s=30, interval_s=0.02)
        done, _ = await asyncio.wait([booking], timeout=0.6)
        assert not done and await blocked()
        await hold.rollback()
        assert await booking == "booked"
    finally:
        await holder.close()


async def test_a_replayed_nonce_fails_the_group_call_whole(shard: asyncpg.Connection) -> None:
    """Issue 21: the group call records its drawdowns' nonces in its own statement; one
    already recorded (a captured request resent under another key) undoes the call."""
    first = booking_args(0, line_id=1)
    assert await _book(shard, [first]) == ["booked"]
    replay = _with(booking_args(1, line_id=2), 44, first[44])  # the same nonce, a new key
    with pytest.raises(asyncpg.UniqueViolationError):
        await _book(shard, [booking_args(2, line_id=3), replay])
    assert await _loan_ids(shard) == {_id(first[LOAN_ID])}
    assert await shard.fetchval("SELECT count(*) FROM request_nonce") == 1

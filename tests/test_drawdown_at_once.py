"""The one-statement drawdown (`book_drawdowns`, one or several at a time) trusts nothing it read before taking
the line's lock: a line frozen or drawn on between the engine's read and its
booking is rechecked under locks, refused with the usual code, and nothing is
written."""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal

import asyncpg
import pytest

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, Reply

BLOCKED_WAIT_S = 10.0


async def _shard_conn(settings: Settings, line_id: str) -> asyncpg.Connection:
    shard = settings.shard_map().physical_for(shard_of_id(int(line_id)))
    return await asyncpg.connect(shard.dsn)


async def _wait_until_booking_waits(conn: asyncpg.Connection) -> None:
    """Until a `book_drawdowns` call (the one-statement path) waits on a row lock. It
    gives up after its 250 ms lock_timeout and the locked path takes over: the outcome
    is the same, and the tests below hold for both."""
    deadline = asyncio.get_running_loop().time() + BLOCKED_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        await conn.execute("SELECT pg_stat_clear_snapshot()")  # else fixed for the transaction
        waiting = await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND query LIKE '%book_drawdowns(%'"""
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no drawdown reached book_drawdowns' line lock")


async def _drawdown_while_line_held(
    api: ApiClient, conn: asyncpg.Connection, line_id: str, change: str | None = None,
    key: str | None = None,
) -> Reply:  # fmt: skip
    """Hold the line's row lock, let a drawdown of 3000.00 read the line and wait in
    `book_drawdown`, run `change` (SQL, $1 the line) on the line, then let go; returns
    the drawdown's reply."""
    async with conn.transaction():
        await conn.execute(
            "SELECT 1 FROM credit_line WHERE credit_line_id = $1 FOR UPDATE", int(line_id)
        )
        drawdown = asyncio.create_task(api.drawdown(line_id, "3000.00", key=key))
        await _wait_until_booking_waits(conn)
        if change is not None:
            await conn.execute(change, int(line_id))
    return await drawdown


async def _line_row(conn: asyncpg.Connection, line_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        """SELECT l.used_fen, l.annual_rate_pct,
                  (SELECT count(*) FROM loan WHERE credit_line_id = l.credit_line_id) AS loans,
                  (SELECT count(*) FROM idempotency_record r
                    WHERE r.customer_id = l.customer_id) AS records
           FROM credit_line l WHERE credit_line_id = $1""",
        int(line_id),
    )
    assert row is not None
    return row


@pytest.mark.parametrize(
    ("change", "code", "used_fen"),
    [
        ("UPDATE credit_line SET status = 'frozen', status_reason = 'test' WHERE credit_line_id = $1",
         "CREDIT_LINE_FROZEN", 0),
        ("UPDATE credit_line SET used_fen = limit_fen - 100000 WHERE credit_line_id = $1",
         "CREDIT_LINE_EXCEEDED", 900000),
    ],
)  # fmt: skip
async def test_line_changed_after_the_read_is_refused_under_lock(
    api: ApiClient, settings: Settings, change: str, code: str, used_fen: int
) -> None:
    line_id = await api.line(await api.customer(), limit="10000.00")
    conn = await _shard_conn(settings, line_id)
    try:
        reply = await _drawdown_while_line_held(api, conn, line_id, change)
        assert (reply.status, reply.json["code"]) == (422, code), reply
        line = await _line_row(conn, line_id)
        # The change stood in for another drawdown: take it back, so that the line owes
        # what its loans owe (tests/books.py checks every line at the suite's end).
        await conn.execute("UPDATE credit_line SET used_fen = 0 WHERE credit_line_id = $1",
                           int(line_id))  # fmt: skip
    finally:
        # The change broke "used = the loans' outstanding" on purpose: mend it, or the
        # suite-end books check (test_zz_suite_end) fails for a line of this test.
        await conn.execute("UPDATE credit_line SET used_fen = 0 WHERE credit_line_id = $1",
                           int(line_id))  # fmt: skip
        await conn.close()
    assert line["loans"] == 0
    assert line["used_fen"] == used_fen  # as the change left it: the drawdown added nothing


async def test_line_unchanged_while_waiting_is_booked_at_once(
    api: ApiClient, settings: Settings
) -> None:
    line_id = await api.line(await api.customer(), limit="10000.00")
    conn = await _shard_conn(settings, line_id)
    key = secrets.token_hex(12)
    try:
        reply = await _drawdown_while_line_held(api, conn, line_id, key=key)
        assert reply.status == 201, reply
        line = await _line_row(conn, line_id)
        # The durable record of this drawdown's key (the customer's and the line's own
        # records do not count), written by the same statement as the loan.
        stored = await conn.fetchval(
            "SELECT response_body FROM idempotency_record WHERE channel_id = $1 AND idem_key = $2",
            api.channel, key,
        )  # fmt: skip
    finally:
        await conn.close()
    assert line["used_fen"] == 300000
    assert line["loans"] == 1
    assert stored is not None and reply.json["loan_id"] in stored.decode()


async def test_a_rate_changed_after_the_read_is_booked_by_the_locked_path(
    api: ApiClient, settings: Settings
) -> None:
    """The one statement finds the rate it planned with gone (RECHECK); the locked
    transaction plans again at the line's rate and books the loan."""
    line_id = await api.line(await api.customer(), limit="10000.00")
    conn = await _shard_conn(settings, line_id)
    try:
        change = (
            "UPDATE credit_line SET annual_rate_pct = annual_rate_pct + 1 WHERE credit_line_id = $1"
        )
        reply = await _drawdown_while_line_held(api, conn, line_id, change)
        assert reply.status == 201, reply
        line = await _line_row(conn, line_id)
        loan = await conn.fetchrow(
            "SELECT annual_rate_pct, channel_id FROM loan WHERE credit_line_id = $1", int(line_id)
        )
    finally:
        await conn.close()
    new_rate = line["annual_rate_pct"]
    assert Decimal(reply.json["annual_rate_pct"]) == new_rate
    assert loan is not None
    assert (loan["annual_rate_pct"], loan["channel_id"]) == (new_rate, "demo")
    assert line["used_fen"] == 300000

"""The plan as one `loan_plan` row (migration 0009): the conversion keeps every
installment row, the `installment` view shows them again, the row's CHECK refuses
what the rows' keys and CHECKs refused, and a locked read that waited sees the plan
the lock's holder wrote."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from engine.migrate import SHARD_MIGRATIONS
from engine.services.loan_store import fetch_loan
from engine.stores.reference import Channel
from sharding.migrations import apply_migrations, load_migrations

PLAN_MIGRATION = 9
# seq, due, principal, interest, balance after, principal paid, interest paid,
# penalty unpaid, compound unpaid, accrued through, penalty paid
ROWS = [
    (1, dt.date(2026, 2, 10), 40_000, 1_200, 80_000, 40_000, 1_200, 0, 0, None, 310),
    (2, dt.date(2026, 3, 10), 40_000, 800, 40_000, 5_000, 800, 120, 7, dt.date(2026, 3, 20), 0),
    (3, dt.date(2026, 4, 10), 40_000, 400, 0, 0, 0, 0, 0, None, 0),
]
COLUMNS = """seq, due_date, principal_fen, interest_fen, balance_after_fen, principal_paid_fen,
    interest_paid_fen, penalty_unpaid_fen, compound_unpaid_fen, accrued_through,
    penalty_paid_fen"""


async def _loan(conn: asyncpg.Connection, loan_id: int) -> None:
    """A customer, a line and a loan (ids from `loan_id`) for plans to hang on."""
    await conn.execute(
        """INSERT INTO customer (customer_id, tenant_id, name_ciphertext, id_number_ciphertext,
               id_number_index, phone_ciphertext, bank_card_ciphertext, id_number_masked,
               phone_masked, bank_card_masked, birth_date)
           VALUES ($1, 't', '', '', $2, '', '', '', '', '', '1990-01-01')""",
        loan_id,
        str(loan_id).encode(),
    )
    await conn.execute(
        """INSERT INTO credit_line (credit_line_id, customer_id, tenant_id, product_code,
               limit_fen, annual_rate_pct, repayment_methods, max_term_months, expires_on)
           VALUES ($1, $1, 't', 'p', 1000000, 3.6, '{equal_principal}', 12, '2030-01-01')""",
        loan_id,
    )
    await conn.execute(
        """INSERT INTO loan (loan_id, customer_id, credit_line_id, tenant_id, channel_id,
               product_code, receipt_no, principal_fen, outstanding_principal_fen,
               annual_rate_pct, penalty_multiplier, repayment_method, term_months, start_date,
               maturity_date, status, disburse_to_ciphertext, disburse_to_masked, payment_fen,
               requested_at)
           VALUES ($1, $1, $1, 't', 'c', 'p', $2, 120000, 75000, 3.6, 1.5, 'equal_principal',
               3, '2026-01-10', '2026-04-10', 'disbursed', '', '', 40000, now())""",
        loan_id,
        f"R{loan_id}",
    )


async def loan_with_plan(conn: asyncpg.Connection, loan_id: int) -> None:
    """`_loan` with ROWS as its plan."""
    await _loan(conn, loan_id)
    columns = [list(values) for values in zip(*ROWS, strict=True)]
    await conn.execute(
        f"INSERT INTO loan_plan (loan_id, customer_id, {COLUMNS}) "
        "VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        loan_id,
        *columns,
    )


async def test_the_conversion_keeps_every_installment_in_seq_order(
    scratch: asyncpg.Connection,
) -> None:
    migrations = load_migrations(SHARD_MIGRATIONS)
    await apply_migrations(scratch, migrations[: PLAN_MIGRATION - 1])
    await _loan(scratch, 1)
    await _loan(scratch, 2)  # a loan without installment rows gets an empty plan
    for row in reversed(ROWS):  # stored out of order: the arrays must still be in seq order
        await scratch.execute(
            f"INSERT INTO installment (loan_id, customer_id, {COLUMNS}) "
            "VALUES (1, 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            *row,
        )
    await apply_migrations(scratch, migrations[:PLAN_MIGRATION])

    plan = await scratch.fetchrow(f"SELECT customer_id, {COLUMNS} FROM loan_plan WHERE loan_id = 1")
    assert plan is not None and plan["customer_id"] == 1
    assert list(zip(*(plan[name.strip()] for name in COLUMNS.split(",")), strict=True)) == ROWS
    assert await scratch.fetchval("SELECT cardinality(seq) FROM loan_plan WHERE loan_id = 2") == 0
    shown = await scratch.fetch(f"SELECT {COLUMNS} FROM installment WHERE loan_id = 1 ORDER BY seq")
    assert [tuple(r) for r in shown] == ROWS
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
        await scratch.execute("DELETE FROM installment WHERE loan_id = 1")  # the view is read-only


def _plan_with(**changes: list[object]) -> list[list[object]]:
    columns = [list(values) for values in zip(*ROWS, strict=True)]
    names = [name.strip() for name in COLUMNS.split(",")]
    for name, values in changes.items():
        columns[names.index(name)] = values
    return columns


@pytest.mark.parametrize(
    "changes",
    [
        {"principal_paid_fen": [40_000, 40_001, 0]},  # more principal paid than due
        {"interest_paid_fen": [1_200, 800, 401]},  # more interest paid than due
        {"penalty_unpaid_fen": [0, -1, 0]},
        {"principal_fen": [40_000, None, 40_000]},  # a NULL would pass `0 <= ALL`
        {"due_date": [dt.date(2026, 2, 10), dt.date(2026, 3, 10)]},  # one element short
        {"seq": [0, 1, 2]},
        {"seq": [1, 1, 2]},  # the old primary key (loan_id, seq): no seq twice
        {"seq": [2, 1, 3]},  # the arrays' order is the installments' order
    ],
    ids=[
        "principal overpaid",
        "interest overpaid",
        "negative",
        "null",
        "short",
        "seq 0",
        "seq repeated",
        "seq out of order",
    ],
)
async def test_an_inconsistent_plan_is_refused(
    scratch: asyncpg.Connection, changes: dict[str, list[object]]
) -> None:
    await apply_migrations(scratch, load_migrations(SHARD_MIGRATIONS))
    await _loan(scratch, 1)
    insert = (
        f"INSERT INTO loan_plan (loan_id, customer_id, {COLUMNS}) "
        "VALUES (1, 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )
    with pytest.raises(asyncpg.CheckViolationError, match="loan_plan_consistent"):
        await scratch.execute(insert, *_plan_with(**changes))
    await scratch.execute(insert, *_plan_with())  # the plan as it should be is taken
    assert await scratch.fetchval("SELECT count(*) FROM installment") == len(ROWS)


@pytest.mark.parametrize(
    "column_sql",
    [
        "principal_fen = '[2:4]={40000,40000,40000}'",  # right length, wrong first index
        "principal_fen = '{{40000},{40000},{40000}}'",  # right count, two dimensions
    ],
    ids=["from index 2", "two dimensions"],
)
async def test_an_array_not_one_dimensional_from_index_one_is_refused(
    scratch: asyncpg.Connection, column_sql: str
) -> None:
    await apply_migrations(scratch, load_migrations(SHARD_MIGRATIONS))
    await _loan(scratch, 1)
    await scratch.execute(
        f"INSERT INTO loan_plan (loan_id, customer_id, {COLUMNS}) "
        "VALUES (1, 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        *_plan_with(),
    )
    with pytest.raises(asyncpg.CheckViolationError, match="loan_plan_consistent"):
        await scratch.execute(f"UPDATE loan_plan SET {column_sql} WHERE loan_id = 1")


async def test_a_locked_read_that_waited_sees_the_plan_the_holder_wrote(
    scratch: asyncpg.Connection, scratch_db: str
) -> None:
    """A repayment's phase A waits for the loan a completing repayment holds; once it
    gets the lock it must see the plan that completion wrote, not the one before."""
    await apply_migrations(scratch, load_migrations(SHARD_MIGRATIONS))
    await _loan(scratch, 1)
    insert = (
        f"INSERT INTO loan_plan (loan_id, customer_id, {COLUMNS}) "
        "VALUES (1, 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )
    await scratch.execute(insert, *_plan_with())
    waiter = await asyncpg.connect(scratch_db)
    channel = Channel(channel_id="c", tenant_id="t", secret="", active=True)
    await fetch_loan(waiter, channel, 1)  # the session's types and plan, before the race
    holder = scratch.transaction()
    await holder.start()
    holder_done = False
    try:
        await scratch.execute("SELECT 1 FROM loan WHERE loan_id = 1 FOR UPDATE")
        read = asyncio.create_task(fetch_loan(waiter, channel, 1, lock=True))
        for _ in range(100):  # until the read waits for the holder's lock
            waiting = await scratch.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'SELECT loan.loan_id%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert not read.done(), read.exception() if read.done() else None
        assert waiting
        await scratch.execute(
            "UPDATE loan_plan SET principal_paid_fen = '{40000,40000,0}' WHERE loan_id = 1"
        )
        await scratch.execute("UPDATE loan SET plan_version = plan_version + 1 WHERE loan_id = 1")
        await holder.commit()
        holder_done = True
        loan = await asyncio.wait_for(read, timeout=10)
    finally:
        if not holder_done:  # only when the test failed before the commit
            await holder.rollback()
        await waiter.close()
    assert loan.row.plan_version == 2
    assert [s.principal_paid_fen for s in loan.state.statuses] == [40_000, 40_000, 0]

"""The day-end's checkpoint on each shard (`eod_progress`): per business date and
step, the last key done (a loan, customer or outbox row, in ascending order) and how
many rows so far.

A chunk moves the checkpoint in its own transaction (`advance`), from the key it
started at: if the row says otherwise, another runner got there (the lease should
have stopped it) and the chunk is rolled back whole. So a killed run resumes at the
last committed chunk, and nothing is done twice.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec


class Checkpoint(msgspec.Struct, frozen=True):
    step: str
    last_key: int
    rows_done: int
    finished: bool


class CheckpointMoved(RuntimeError):
    """The checkpoint is not where this chunk started: another runner is at work."""


async def begin(conn: asyncpg.Connection, day: dt.date, step: str) -> Checkpoint:
    """The step's checkpoint for `day`, made at key 0 the first time."""
    row = await conn.fetchrow(
        """INSERT INTO eod_progress (business_date, step) VALUES ($1, $2)
           ON CONFLICT (business_date, step) DO UPDATE SET step = excluded.step
           RETURNING last_key, rows_done, finished_at""",
        day,
        step,
    )
    assert row is not None
    return Checkpoint(step, row["last_key"], row["rows_done"], row["finished_at"] is not None)


async def advance(
    conn: asyncpg.Connection, day: dt.date, step: str, *, start: int, last: int, rows: int
) -> None:
    """Inside the chunk's transaction: the checkpoint moves from `start` to `last`."""
    assert conn.is_in_transaction(), "the checkpoint commits with the chunk's work"
    assert last >= start, (start, last)
    status = await conn.execute(
        """UPDATE eod_progress SET last_key = $4, rows_done = rows_done + $5
           WHERE business_date = $1 AND step = $2 AND last_key = $3 AND finished_at IS NULL""",
        day,
        step,
        start,
        last,
        rows,
    )
    if status != "UPDATE 1":
        raise CheckpointMoved(f"{step} of {day}: the checkpoint is not at {start}")


async def finish(conn: asyncpg.Connection, day: dt.date, step: str) -> None:
    await conn.execute(
        """UPDATE eod_progress SET finished_at = now()
           WHERE business_date = $1 AND step = $2 AND finished_at IS NULL""",
        day,
        step,
    )


async def of_day(conn: asyncpg.Connection, day: dt.date) -> dict[str, Checkpoint]:
    rows = await conn.fetch(
        "SELECT step, last_key, rows_done, finished_at FROM eod_progress WHERE business_date = $1",
        day,
    )
    return {
        r["step"]: Checkpoint(
            r["step"], r["last_key"], r["rows_done"], r["finished_at"] is not None
        )
        for r in rows
    }


async def last_finished_day(conn: asyncpg.Connection, final_step: str) -> dt.date | None:
    value = await conn.fetchval(
        """SELECT max(business_date) FROM eod_progress
           WHERE step = $1 AND finished_at IS NOT NULL""",
        final_step,
    )
    assert value is None or isinstance(value, dt.date)
    return value

"""The day-end killed (SIGKILL) mid-run, again and again, then run to the end, books
exactly what an uninterrupted run books on the same data: two sets of databases
seeded alike (the seeder's rows follow from the customer index), one run straight
through, the other killed in its steps; every loan's accounts, plan, accrual, class
and auto-debit are then compared."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.settings import Settings
from tests.conftest import ROOT
from tests.isolated import Isolated

DAY = dt.date(2026, 11, 16)
ONE = dt.timedelta(days=1)
KILLS = 4
# Tiny chunks: many commits to land between.
CONFIG = "[eod]\naccrual_chunk = 4\noverdue_chunk = 2\ndeduct_chunk = 2\nremind_chunk = 2\nprune_chunk = 2\n"


@pytest.fixture
async def twins(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Isolated, Isolated]]:
    config = tmp_path / "engine.toml"
    config.write_text(CONFIG)
    base = settings.control_dsn.rsplit("/", 1)[0]
    sets = []
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        isolated = Isolated(base, tmp_path / name, {"ENGINE_CONFIG": str(config)})
        await isolated.create(DAY)
        sets.append(isolated)
    try:
        for isolated in sets:  # loans late by a day on the day run below, and loans due
            isolated.seed(40)
            assert (await isolated.eod(DAY))[0].closed
            await isolated.settle_debits(succeeded=False)
        yield sets[0], sets[1]
    finally:
        for isolated in sets:
            await isolated.drop()


async def _progress(dsns: list[str], day: dt.date) -> list[asyncpg.Record]:
    rows = []
    for dsn in dsns:
        conn = await asyncpg.connect(dsn)
        try:
            rows += await conn.fetch(
                "SELECT step, rows_done, finished_at FROM eod_progress WHERE business_date = $1",
                day,
            )
        finally:
            await conn.close()
    return rows


async def _kill_mid_run(books: Isolated, day: dt.date, after_rows: int) -> bool:
    """Start `eod run --date day`, SIGKILL it once `after_rows` rows are done in all;
    True if it was killed with a step begun and unfinished."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", "eod", "run", "--date", str(day), "--quiet",
        cwd=ROOT,
        env=dict(os.environ) | books.env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        while proc.returncode is None and time.monotonic() < deadline:
            rows = await _progress(books.shard_dsns, day)
            if sum(r["rows_done"] for r in rows) >= after_rows:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                after = await _progress(books.shard_dsns, day)
                return any(r["finished_at"] is None for r in after)
            await asyncio.sleep(0.01)
        return False
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


_SNAPSHOT = {
    "accounts": """SELECT code, owner_id, debit_total_fen, credit_total_fen FROM ledger_account
                   WHERE customer_id IS NOT NULL ORDER BY code, owner_id""",
    "internal": """SELECT code, sum(debit_total_fen), sum(credit_total_fen) FROM ledger_account
                   WHERE customer_id IS NULL GROUP BY code ORDER BY code""",
    "plans": """SELECT loan_id, penalty_unpaid_fen, compound_unpaid_fen, accrued_through,
                       principal_paid_fen, interest_paid_fen FROM loan_plan ORDER BY loan_id""",
    "accrual": "SELECT * FROM loan_accrual ORDER BY loan_id",
    "risk": "SELECT loan_id, days_past_due, classification FROM loan_risk ORDER BY loan_id",
    "lines": "SELECT credit_line_id, status, frozen_by, used_fen FROM credit_line ORDER BY 1",
    "cases": "SELECT loan_id, officer_id, dpd_at_open FROM collection_case ORDER BY loan_id",
    "debits": """SELECT customer_id, total_fen, status, business_date, channel_key FROM repayment
                 ORDER BY customer_id, channel_key""",
    "outbox": "SELECT kind, count(*) FROM outbox GROUP BY kind ORDER BY kind",
    "postings": """SELECT kind, count(*) > 0, sum(CASE WHEN amount_fen > 0 THEN amount_fen END)
                   FROM ledger_txn JOIN ledger_leg USING (txn_id) GROUP BY kind ORDER BY kind""",
}


async def _snapshot(books: Isolated) -> dict[str, list[tuple[object, ...]]]:
    out: dict[str, list[tuple[object, ...]]] = {}
    for dsn in books.shard_dsns:
        conn = await asyncpg.connect(dsn)
        try:
            for name, sql in _SNAPSHOT.items():
                out.setdefault(name, []).extend(tuple(r) for r in await conn.fetch(sql))
        finally:
            await conn.close()
    return out


async def test_killed_runs_book_what_a_straight_run_books(
    twins: tuple[Isolated, Isolated],
) -> None:
    straight, killed = twins
    day = DAY + ONE
    assert (await straight.eod(day))[0].closed
    cut = 0
    for n in range(KILLS):
        if await _kill_mid_run(killed, day, after_rows=15 + 40 * n):
            cut += 1
    assert cut >= 2, "the kills must land mid-run, with a step begun and not finished"
    result = killed.cli("-m", "engine", "eod", "run", "--date", str(day), "--quiet")
    assert result.returncode == 0, result.stderr
    assert await killed.problems(accrued_through=day) == []
    assert await straight.problems(accrued_through=day) == []
    mine, theirs = await _snapshot(killed), await _snapshot(straight)
    for name in _SNAPSHOT:
        assert mine[name] == theirs[name], name

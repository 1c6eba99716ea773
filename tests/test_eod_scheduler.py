"""The day-end on its schedule: two scheduler processes on databases of their own whose
business date is weeks behind the wall clock. Between them they close every missed date
in order, each shard's steps run once per date (the lease), and each reports a lag of
zero when done."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.eod.days import calendar_today
from engine.settings import Settings
from tests.conftest import ServiceProcess, free_port
from tests.isolated import Isolated

BEHIND_DAYS = 6


@pytest.fixture
async def books(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    today = calendar_today(dt.time(0, 0))
    isolated = Isolated(settings.control_dsn.rsplit("/", 1)[0], tmp_path)
    await isolated.create(today - dt.timedelta(days=BEHIND_DAYS))
    try:
        yield isolated
    finally:
        await isolated.drop()


async def _closed(books: Isolated) -> list[dt.date]:
    control = await asyncpg.connect(books.settings.control_dsn)
    try:
        rows = await control.fetch(
            "SELECT business_date FROM eod_day WHERE finished_at IS NOT NULL ORDER BY 1"
        )
    finally:
        await control.close()
    return [r[0] for r in rows]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


async def test_two_schedulers_close_the_missed_dates_once_each(books: Isolated) -> None:
    books.seed(12)
    ports = [free_port(), free_port()]
    schedulers = [
        ServiceProcess(
            "eod",
            "engine",
            ["eod", "schedule"],
            books.env | {"ENGINE_EOD_POLL_S": "0.5", "ENGINE_EOD_METRICS_PORT": str(port)},
            port,
        )
        for port in ports
    ]
    try:
        for scheduler in schedulers:
            scheduler.wait_ready()
        today = calendar_today(dt.time(0, 0))
        deadline = time.monotonic() + 120
        while (closed := await _closed(books))[-1:] != [today - dt.timedelta(days=1)]:
            assert time.monotonic() < deadline, f"the schedulers did not catch up: {closed}"
            await asyncio.sleep(0.2)
        assert await books.business_date() == today
        first = today - dt.timedelta(days=BEHIND_DAYS)
        assert closed == [first + dt.timedelta(days=n) for n in range(BEHIND_DAYS)]
        for dsn in books.shard_dsns:
            conn = await asyncpg.connect(dsn)
            try:  # one checkpoint per date and step, every one finished
                rows = await conn.fetch(
                    "SELECT business_date, count(*), count(finished_at) FROM eod_progress "
                    "GROUP BY business_date"
                )
                assert {tuple(r) for r in rows} == {(d, 6, 6) for d in closed}
                accruals = await conn.fetchval(
                    "SELECT count(*) FROM ledger_txn WHERE kind = 'interest_accrual'"
                )
                assert accruals <= BEHIND_DAYS * 10  # a posting per chunk and date, no more
            finally:
                await conn.close()
        assert await books.problems(accrued_through=today - dt.timedelta(days=1)) == []
        lag_deadline = time.monotonic() + 30
        while True:
            text = "".join(_scrape(port) for port in ports)
            lags = [line for line in text.splitlines() if line.startswith("eod_lag_days{")]
            if lags and all(line.endswith(" 0.0") for line in lags):
                break
            assert time.monotonic() < lag_deadline, lags
            await asyncio.sleep(0.3)
    finally:
        for scheduler in schedulers:
            scheduler.stop()

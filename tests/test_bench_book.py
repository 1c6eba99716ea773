"""`loadtest.bench_book` books real drawdowns through `book_drawdown` on a throw-away
database: it must keep up with the function's signature and the schema, and it
must not leave its database behind."""

from __future__ import annotations

import asyncpg
import pytest

from engine.migrate import SHARD_MIGRATIONS
from engine.settings import Settings
from loadtest.bench_book import bench


async def test_books_every_call_and_drops_its_database(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await bench(settings.control_dsn, SHARD_MIGRATIONS, calls=20, rounds=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("bookings/s, PostgreSQL CPU" in line for line in lines)
    admin = await asyncpg.connect(settings.control_dsn)
    try:
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'bench_book_%'"
        )
    finally:
        await admin.close()
    assert left == 0

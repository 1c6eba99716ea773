"""Bring the control database and every shard to the current schema.

control  <- engine/migrations/*.sql
shard_*  <- ledger/migrations/*.sql, then the chart of accounts
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec

from engine.settings import Settings
from ledger.store import ensure_chart
from sharding.migrations import apply_migrations, load_migrations

CONTROL_MIGRATIONS = Path(__file__).parent / "migrations"
SHARD_MIGRATIONS = Path(__file__).parent.parent / "ledger" / "migrations"
CONNECT_TIMEOUT_S = 10.0


class MigrationResult(msgspec.Struct, frozen=True):
    database: str
    applied: list[int]


async def _migrate_one(name: str, dsn: str, directory: Path, *, shard: bool) -> MigrationResult:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        applied = await apply_migrations(conn, load_migrations(directory))
        if shard:
            async with conn.transaction():
                await ensure_chart(conn)
    finally:
        await conn.close()
    return MigrationResult(name, applied)


async def migrate_all(settings: Settings) -> list[MigrationResult]:
    jobs = [_migrate_one("control", settings.control_dsn, CONTROL_MIGRATIONS, shard=False)]
    jobs += [
        _migrate_one(shard.name, shard.dsn, SHARD_MIGRATIONS, shard=True)
        for shard in settings.shards
    ]
    return list(await asyncio.gather(*jobs))

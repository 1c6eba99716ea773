"""Migrations: re-running is a no-op; history that changed is refused."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from engine.migrate import CONTROL_MIGRATIONS, SHARD_MIGRATIONS, migrate_all
from engine.settings import Settings
from sharding.migrations import MigrationError, apply_migrations, load_migrations


async def test_migrate_all_is_a_no_op_when_current(settings: Settings) -> None:
    await migrate_all(settings)
    results = await migrate_all(settings)
    assert [r.database for r in results] == ["control", *(s.name for s in settings.shards)]
    assert all(r.applied == [] for r in results)


@pytest.mark.parametrize("directory", [CONTROL_MIGRATIONS, SHARD_MIGRATIONS])
async def test_fresh_database_then_rerun(scratch_db: str, directory: object) -> None:
    migrations = load_migrations(directory)  # type: ignore[arg-type]
    conn = await asyncpg.connect(scratch_db)
    try:
        assert await apply_migrations(conn, migrations) == [m.version for m in migrations]
        assert await apply_migrations(conn, migrations) == []
        changed = [msgspec.structs.replace(migrations[0], sql=migrations[0].sql + "\n-- edited")]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, changed + migrations[1:])
        with pytest.raises(MigrationError, match="does not know"):
            await apply_migrations(conn, [])
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing(scratch_db: str) -> None:
    conn = await asyncpg.connect(scratch_db)
    try:
        bad = load_migrations(SHARD_MIGRATIONS)[:1]
        bad = [msgspec.structs.replace(bad[0], sql=bad[0].sql + "\nSELECT no_such_function();")]
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await apply_migrations(conn, bad)
        assert await conn.fetchval("SELECT to_regclass('ledger_leg')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migration") == 0
    finally:
        await conn.close()

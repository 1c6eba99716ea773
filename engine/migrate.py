"""Bring the control database and every shard to the current schema.

control  <- engine/migrations/*.sql, then its data steps
shard_*  <- ledger/migrations/*.sql, then the chart of accounts, then its data steps

Data steps are what SQL cannot do, each run once per database and recorded in its
`data_migration` table: `engine.stores.pii_rebind` (personal data re-sealed bound to
its row, issue 21) and `engine.stores.customer_regions` (the regions of customers
registered before issue 19) need the PII keys, so `migrate` reads the same settings as the
engine. They are named, not numbered: they run after every SQL migration.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec

from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores import customer_regions, pii_rebind
from ledger.store import ensure_chart
from sharding.migrations import apply_migrations, load_migrations

CONTROL_MIGRATIONS = Path(__file__).parent / "migrations"
SHARD_MIGRATIONS = Path(__file__).parent.parent / "ledger" / "migrations"
CONNECT_TIMEOUT_S = 10.0


class MigrationResult(msgspec.Struct, frozen=True):
    database: str
    applied: list[int]
    data_steps: list[str] = msgspec.field(default_factory=list)  # what each changed


async def _migrate_one(
    name: str, dsn: str, directory: Path, cipher: PiiCipher, *, shard: bool
) -> MigrationResult:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        applied = await apply_migrations(conn, load_migrations(directory))
        if shard:
            async with conn.transaction():
                await ensure_chart(conn)
        changed = await pii_rebind.run(conn, cipher, shard=shard)
        regions = await customer_regions.run(conn, cipher) if shard else None
    finally:
        await conn.close()
    steps = []
    if changed is not None:
        rows = ", ".join(f"{table} {count}" for table, count in changed.items())
        steps.append(f"{pii_rebind.STEP} (rows re-sealed: {rows})")
    if regions is not None:
        steps.append(f"{customer_regions.STEP} (customers: {regions})")
    return MigrationResult(name, applied, steps)


async def migrate_all(settings: Settings) -> list[MigrationResult]:
    crypto = settings.crypto
    cipher = PiiCipher.from_config(crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key)
    jobs = [_migrate_one("control", settings.control_dsn, CONTROL_MIGRATIONS, cipher, shard=False)]
    jobs += [
        _migrate_one(shard.name, shard.dsn, SHARD_MIGRATIONS, cipher, shard=True)
        for shard in settings.shards
    ]
    return list(await asyncio.gather(*jobs))

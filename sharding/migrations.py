"""Versioned SQL migrations, applied once per database and recorded.

A migration is a file `NNNN_name.sql` in a directory. Each runs in its own
transaction together with its row in `schema_migration`, so a failure leaves
no half-applied version. Re-running is a no-op; an applied file whose text
changed afterwards is refused (a migration is history, not a draft). An
advisory lock keeps two migrating processes from racing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import asyncpg
import msgspec

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6C656E64  # "lend": any constant shared by every migrating process

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    sha256      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """The migration files or the recorded history are inconsistent."""


def load_migrations(directory: Path) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text("utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(
            f"migration versions in {directory} must run 1..N without gaps: {versions}"
        )
    return found


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    """Apply what is missing; return the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        rows = await conn.fetch("SELECT version, sha256 FROM schema_migration")
        recorded = {int(row["version"]): str(row["sha256"]) for row in rows}
        for migration in migrations:
            digest = recorded.get(migration.version)
            if digest is not None:
                if digest != migration.sha256:
                    what = f"migration {migration.version} ({migration.name})"
                    raise MigrationError(f"{what} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migration (version, name, sha256) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.sha256,
                )
            applied_now.append(migration.version)
        unknown = sorted(set(recorded) - {m.version for m in migrations})
        if unknown:
            raise MigrationError(f"database has versions this code does not know: {unknown}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now

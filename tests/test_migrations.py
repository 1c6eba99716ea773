"""Migrations: re-running is a no-op; history that changed is refused."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from engine.migrate import CONTROL_MIGRATIONS, SHARD_MIGRATIONS, migrate_all
from engine.settings import Settings
from engine.stores.reference import PREPAY_RULES, terms_of
from sharding.migrations import Migration, MigrationError, apply_migrations, load_migrations


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


async def _product_before_prepay_rules(conn: asyncpg.Connection, default_rule: str) -> None:
    await conn.execute("INSERT INTO tenant (tenant_id, name) VALUES ('bank1', 'Bank 1')")
    await conn.execute(
        """INSERT INTO product_template (template_code, name, loan_kind, repayment_methods,
               term_months_min, term_months_max, bullet_term_months_max,
               line_limit_min_fen, line_limit_max_fen, annual_rate_pct_floor,
               annual_rate_pct_cap, penalty_multiplier_min, penalty_multiplier_max,
               prepay_rules)
           VALUES ('t1', 't1', 'business', '{bullet}', 1, 12, 12, 1, 100, 1, 20, 1.3, 1.5,
                   '{reduce_term}')"""
    )
    await conn.execute(
        """INSERT INTO product (product_code, tenant_id, name, repayment_methods,
               term_months_min, term_months_max, bullet_term_months_max, line_limit_max_fen,
               annual_rate_pct_min, annual_rate_pct_max, prepay_rule_default, template_code)
           VALUES ('p1', 'bank1', 'p1', '{bullet}', 1, 12, 12, 100, 1, 20, $1, 't1')""",
        default_rule,
    )
    await conn.execute(
        """INSERT INTO product_version (product_code, version, terms, changed_by)
           SELECT product_code, version, to_jsonb(product), 'test' FROM product"""
    )


def _up_to_prepay_rules() -> tuple[list[Migration], int]:
    migrations = load_migrations(CONTROL_MIGRATIONS)
    return migrations, next(i for i, m in enumerate(migrations) if m.name == "product_prepay_rules")


async def test_a_product_with_an_unknown_default_rule_stops_the_migration_by_name(
    scratch_db: str,
) -> None:
    migrations, at = _up_to_prepay_rules()
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, migrations[:at])
        await _product_before_prepay_rules(conn, "reduce_fast")  # written by hand once
        with pytest.raises(asyncpg.RaiseError, match="p1=reduce_fast"):
            await apply_migrations(conn, migrations)
        # Nothing of it applied, the product as it was.
        assert await conn.fetchval("SELECT max(version) FROM schema_migration") == at
        assert await conn.fetchval("SELECT prepay_rule_default FROM product") == "reduce_fast"
    finally:
        await conn.close()


async def test_products_from_before_prepay_rules_allow_every_rule(scratch_db: str) -> None:
    """Control migration `product_prepay_rules` on a product and its version written
    before it: every rule allowed, in the row and as the version's terms are read; a
    default outside the rules is refused. Found by name, so it survives renumbering."""
    migrations, at = _up_to_prepay_rules()
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, migrations[:at])
        await _product_before_prepay_rules(conn, "reduce_term")
        await apply_migrations(conn, migrations)
        rules = await conn.fetchval("SELECT prepay_rules FROM product")
        assert tuple(rules) == PREPAY_RULES == ("reduce_amount", "reduce_nearest", "reduce_term")
        terms = terms_of(await conn.fetchval("SELECT terms FROM product_version"))
        assert (terms.version, terms.prepay_rules) == (1, PREPAY_RULES)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE product SET prepay_rules = '{reduce_nearest}'")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE product SET prepay_rules = '{reduce_term, reduce_fast}'")
    finally:
        await conn.close()

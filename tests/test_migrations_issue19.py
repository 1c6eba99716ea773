"""Issue 19's control migration on a database that already holds tenants and products:
the union above them, each product an adoption (version 1) of a template of its own
values, and the tree kept two levels deep. Found by name, so it survives renumbering."""

from __future__ import annotations

import os

import asyncpg
import pytest

from engine.migrate import CONTROL_MIGRATIONS, SHARD_MIGRATIONS
from engine.security.pii import dev_cipher
from engine.stores import customer_regions
from engine.stores.reference import terms_of
from sharding.migrations import Migration, apply_migrations, load_migrations

NAME = "tenant_tree_products"


def _before(migrations: list[Migration]) -> list[Migration]:
    return migrations[: next(i for i, m in enumerate(migrations) if m.name == NAME)]


async def test_existing_products_become_versioned_adoptions(scratch_db: str) -> None:
    migrations = load_migrations(CONTROL_MIGRATIONS)
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, _before(migrations))
        await conn.execute("INSERT INTO tenant (tenant_id, name) VALUES ('bank1', 'Bank 1')")
        await conn.execute(
            """INSERT INTO product (product_code, tenant_id, name, repayment_methods,
                   term_months_min, term_months_max, bullet_term_months_max, line_limit_max_fen,
                   customer_cap_group, customer_outstanding_max_fen, annual_rate_pct_min,
                   annual_rate_pct_max)
               VALUES ('bank1-consumer', 'bank1', '消费贷', '{equal_installment}', 1, 24, 12,
                       20000000, 'internet_consumer', 20000000, 3.5, 15)"""
        )
        await apply_migrations(conn, migrations)
        tenants = {r["tenant_id"]: (r["kind"], r["parent_id"])
                   for r in await conn.fetch("SELECT * FROM tenant")}  # fmt: skip
        assert tenants == {"union": ("union", None), "bank1": ("member_bank", "union")}
        product = await conn.fetchrow("SELECT * FROM product")
        assert (product["template_code"], product["version"], product["status"],
                product["loan_kind"]) == ("bank1-consumer", 1, "active", "consumer")  # fmt: skip
        template = await conn.fetchrow("SELECT * FROM product_template")
        assert template["annual_rate_pct_cap"] == product["annual_rate_pct_max"]
        terms = terms_of(await conn.fetchval("SELECT terms FROM product_version"))
        assert (terms.product_code, terms.version, terms.line_limit_max_fen) == (
            "bank1-consumer", 1, 20000000)  # fmt: skip
        # No deeper than two levels; a new member bank belongs to the union.
        await conn.execute("INSERT INTO tenant (tenant_id, name) VALUES ('bank2', 'Bank 2')")
        assert await conn.fetchval("SELECT parent_id FROM tenant WHERE tenant_id = 'bank2'") == (
            "union"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO tenant (tenant_id, name, parent_id) VALUES ('b3', 'x', 'bank1')"
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """INSERT INTO product_template (template_code, name, loan_kind,
                       repayment_methods, term_months_min, term_months_max,
                       bullet_term_months_max, line_limit_min_fen, line_limit_max_fen,
                       annual_rate_pct_floor, annual_rate_pct_cap, penalty_multiplier_min,
                       penalty_multiplier_max, prepay_rules)
                   VALUES ('c', 'c', 'consumer', '{bullet}', 1, 72, 12, 1, 2, 1, 2, 1.3, 1.5,
                           '{reduce_term}')"""
            )
    finally:
        await conn.close()


async def test_customers_registered_before_get_their_region_once(scratch_db: str) -> None:
    """`migrate`'s data step reads the region from the sealed ID number, once."""
    cipher = dev_cipher()
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, load_migrations(SHARD_MIGRATIONS))
        for customer_id, id_number in (
            (10001, "42010219800101001X"),
            (10002, "110105194912310021"),
        ):
            seal = lambda text, context, row=customer_id: cipher.encrypt(  # noqa: E731
                text, context=context, row=row
            )
            await conn.execute(
                """INSERT INTO customer (customer_id, tenant_id, name_ciphertext,
                       id_number_ciphertext, id_number_index, phone_ciphertext,
                       bank_card_ciphertext, id_number_masked, phone_masked, bank_card_masked,
                       birth_date)
                   VALUES ($1, 'demo', $2, $3, $4, $5, $6, 'x', 'x', 'x', '1980-01-01')""",
                customer_id, seal("张三", "name"), seal(id_number, "id_number"), os.urandom(32),
                seal("13812345678", "phone"), seal("6222021234567890128", "bank_card"),
            )  # fmt: skip
        assert await customer_regions.run(conn, cipher) == 2
        regions = await conn.fetch("SELECT customer_id, id_region FROM customer ORDER BY 1")
        assert [(r["customer_id"], r["id_region"]) for r in regions] == [
            (10001, "420102"), (10002, "110105")]  # fmt: skip
        assert await customer_regions.run(conn, cipher) is None  # once
    finally:
        await conn.close()

"""Issue 16's migrations on databases that already hold data: applications decided and
contracts unsigned before them, bureau reports, channels and a tenant's own SMS template.
Found by name, so they keep working when renumbered."""

from __future__ import annotations

import json

import asyncpg
import pytest

from engine.migrate import CONTROL_MIGRATIONS, SHARD_MIGRATIONS
from sharding.migrations import Migration, apply_migrations, load_migrations

SHARD_NAMES = ("origination_facts", "evidence_records", "customer_bureau_flag")
CONTROL_NAMES = ("channel_names_and_sms",)


def _before(migrations: list[Migration], names: tuple[str, ...]) -> list[Migration]:
    first = min(i for i, m in enumerate(migrations) if m.name in names)
    return migrations[:first]


_APPLICATION_SQL = """INSERT INTO application (application_id, tenant_id, channel_id,
    channel_serial, product_code, id_number_index, applicant_ciphertext, requested_amount_fen,
    requested_term_months, repayment_method, terms_version, status, decision, steps,
    created_at)
    VALUES ($1, 'demo', 'demo', $2, 'demo-credit', $3, '\\x00', 100000, 12,
            'equal_installment', '2026-01', 'approved', $4::jsonb, $5::jsonb,
            '2026-03-01T08:00:00Z')"""


async def _old_origination_data(conn: asyncpg.Connection) -> None:
    """Two approved applications, each with an unsigned contract: one white-listed, one
    approved after review; a bureau report fetched for the second."""
    steps = json.dumps(
        [
            {"step": "received", "at": "2026-03-01T08:00:00+00:00"},
            {"step": "decided", "at": "2026-03-01T08:00:01.250000+00:00"},
        ]
    )
    for application_id, whitelisted in ((101, True), (102, False)):
        decision = json.dumps({"outcome": "approved", "whitelisted": whitelisted})
        index = bytes([application_id])
        await conn.execute(_APPLICATION_SQL, application_id, f"S{application_id}", index,
                           decision, steps)  # fmt: skip
        for kind in ("loan_contract", "credit_authorization"):
            await conn.execute(
                """INSERT INTO contract (contract_id, kind, customer_id, application_id,
                       credit_line_id, document, document_sha256)
                   VALUES ($1, $2, 1, $3, 1, 'text', '\\x00')""",
                application_id + 1000,
                kind,
                application_id,
            )
    await conn.execute(
        """INSERT INTO bureau_report (id_number_index, fetched_at, valid_until, indicators)
           VALUES ($1, '2026-03-01T08:00:02Z', '2026-03-31T08:00:02Z', '{}')""",
        bytes([102]),
    )


async def test_shard_migrations_on_existing_data(scratch_db: str) -> None:
    migrations = load_migrations(SHARD_MIGRATIONS)
    assert {m.name for m in migrations} >= set(SHARD_NAMES)
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, _before(migrations, SHARD_NAMES))
        await _old_origination_data(conn)
        await apply_migrations(conn, migrations)
        decided = await conn.fetch("SELECT decided_at FROM application ORDER BY application_id")
        assert [r["decided_at"].isoformat() for r in decided] == [
            "2026-03-01T08:00:01.250000+00:00"
        ] * 2
        report = await conn.fetchrow("SELECT tenant_id, application_id FROM bureau_report")
        assert (report["tenant_id"], report["application_id"]) == ("demo", 102)
        # The contract approved after review waits for 面签; the white-listed one does not.
        face_to_face = await conn.fetch("SELECT contract_id, met_at FROM contract_face_to_face")
        assert [(r["contract_id"], r["met_at"]) for r in face_to_face] == [(1102, None)]
        flag = await conn.fetchval("SELECT count(*) FROM customer WHERE bureau_flag IS NOT NULL")
        assert flag == 0
    finally:
        await conn.close()


async def test_control_migration_on_existing_data(scratch_db: str) -> None:
    migrations = load_migrations(CONTROL_MIGRATIONS)
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, _before(migrations, CONTROL_NAMES))
        await conn.execute("INSERT INTO tenant (tenant_id, name) VALUES ('t1', 'Bank 1')")
        await conn.execute(
            """INSERT INTO channel (channel_id, tenant_id, secret_ciphertext)
               VALUES ('wx-mini', 't1', '\\x00')"""
        )
        await conn.execute(
            """INSERT INTO sms_template (tenant_id, kind, body)
               VALUES ('t1', 'repayment', '{time}还款{amount}元')"""
        )
        await apply_migrations(conn, migrations)
        assert await conn.fetchval("SELECT display_name FROM channel") == "wx-mini"
        templates = {
            (r["tenant_id"], r["kind"]): r["body"]
            for r in await conn.fetch("SELECT tenant_id, kind, body FROM sms_template")
        }
        assert "{channel}" in templates[("*", "repayment")]
        assert templates[("t1", "repayment")] == "{time}还款{amount}元"  # left as it was
        assert "{code}" in templates[("*", "contract_otp")]
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE sms_template SET body = '{time}还款' WHERE tenant_id = 't1'")
    finally:
        await conn.close()

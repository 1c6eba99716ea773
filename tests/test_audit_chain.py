"""The operators' audit trail: appended entries chain and verify; concurrent appends do
not fork the chain; UPDATE and DELETE are refused; a row changed behind the trigger's back
is found by `audit verify` (exit 1), which names the entry."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest

from engine.operators import audit
from engine.operators.principal import Principal
from engine.settings import Settings
from tests.conftest import run_cli

WHO = Principal("op_00000000000000aa", "demo", frozenset({"auditor"}), login="chain-test")


async def test_append_and_verify(control_conn: asyncpg.Connection) -> None:
    async with control_conn.transaction():
        first = await audit.append(
            control_conn,
            audit.event(WHO, "test.append", "thing:1", before={"n": 1}, after={"n": 2, "s": "é"}),
        )
        second = await audit.append(control_conn, audit.event(WHO, "test.append", "thing:2"))
    assert second == first + 1
    rows = await control_conn.fetch(
        "SELECT * FROM audit_log WHERE seq IN ($1, $2) ORDER BY seq", first, second
    )
    assert bytes(rows[1]["prev_hash"]) == bytes(rows[0]["hash"])
    assert audit.event_of(rows[0]).after == {"n": 2, "s": "é"}
    verified = await audit.verify(control_conn)
    assert verified.problems == [] and verified.entries >= 2


async def test_concurrent_appends_do_not_fork(settings: Settings) -> None:
    pool = await asyncpg.create_pool(settings.control_dsn, min_size=8, max_size=8)
    try:
        seqs = await asyncio.gather(
            *(
                audit.append_alone(pool, audit.event(WHO, "test.concurrent", f"n:{n}"))
                for n in range(40)
            )
        )
        assert len(set(seqs)) == 40
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT seq, prev_hash, hash FROM audit_log WHERE seq BETWEEN $1 AND $2 "
                "ORDER BY seq",
                min(seqs),
                max(seqs),
            )
            # No gap, and each entry links to the one before: one chain.
            assert [r["seq"] for r in rows] == list(range(min(seqs), max(seqs) + 1))
            for before, after in itertools.pairwise(rows):
                assert bytes(after["prev_hash"]) == bytes(before["hash"])
            assert (await audit.verify(conn)).problems == []
    finally:
        await pool.close()


async def test_update_and_delete_are_refused(control_conn: asyncpg.Connection) -> None:
    seq = await audit.append_alone(control_conn, audit.event(WHO, "test.refuse", "x"))
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await control_conn.execute("UPDATE audit_log SET target = 'y' WHERE seq = $1", seq)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await control_conn.execute("DELETE FROM audit_log WHERE seq = $1", seq)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await control_conn.execute("TRUNCATE audit_log")


async def test_tampered_row_is_found(control_conn: asyncpg.Connection) -> None:
    seq = await audit.append_alone(
        control_conn, audit.event(WHO, "test.tamper", "loan:1", after={"officer_id": "A"})
    )
    await audit.append_alone(control_conn, audit.event(WHO, "test.tamper", "after"))
    assert run_cli("audit", "verify").returncode == 0
    # Someone with the table owner's rights edits the entry behind the trigger's back.
    await control_conn.execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;"
        f'UPDATE audit_log SET after = \'{{"officer_id": "B"}}\' WHERE seq = {seq};'
        "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"
    )
    try:
        verified = await audit.verify(control_conn)
        assert [(p.seq, p.kind) for p in verified.problems] == [(seq, "entry_changed")]
        done = run_cli("audit", "verify")
        assert done.returncode == 1
        assert f"BROKEN at entry {seq}: entry_changed" in done.stdout
    finally:  # put it back: the rest of the suite shares the chain
        await control_conn.execute(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;"
            f'UPDATE audit_log SET after = \'{{"officer_id": "A"}}\' WHERE seq = {seq};'
            "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"
        )
    assert (await audit.verify(control_conn)).problems == []
    # A link cut (the next entry's prev_hash rewritten) is found too; rolled back after.
    transaction = control_conn.transaction()
    await transaction.start()
    try:
        await control_conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        await control_conn.execute(
            "UPDATE audit_log SET prev_hash = $2 WHERE seq = $1", seq + 1, bytes(32)
        )
        kinds = {p.kind for p in (await audit.verify(control_conn)).problems}
        assert {"broken_link", "entry_changed"} <= kinds
    finally:
        await transaction.rollback()
    assert (await audit.verify(control_conn)).problems == []

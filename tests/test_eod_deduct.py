"""Auto-deduction's chunk path (engine/eod/deduct.py): the repayments it opens at once
are the ones the channel's locked path would open, a loan changed between the chunk's
read and its statement goes through the locked path, a customer the locked path
refuses is passed over while the rest of the chunk is debited, and the debits the
relay has not finished are bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from prometheus_client import REGISTRY

from engine.contract.messages import RepaymentCreate, RepaymentItemCreate, RepaymentView
from engine.services.customers import BANK_CARD
from engine.services.repayments import open_repayment
from engine.settings import Settings
from engine.stores.reference import Channel
from sharding.ids import IdGenerator
from tests.api_client import new_bank_card
from tests.isolated import TEST_WORKER, Isolated
from tests.waiting import eventually

DAY = dt.date(2026, 11, 16)
DUE_SQL = """SELECT l.loan_id, l.customer_id FROM loan l JOIN loan_plan p USING (loan_id)
             WHERE l.status = 'disbursed' AND p.next_due_date <= $1 ORDER BY l.loan_id"""
EOD_REPAYMENTS_SQL = """SELECT r.repayment_id, r.customer_id, r.total_fen, r.channel_key,
                               i.status_code, i.response_body
                        FROM repayment r JOIN idempotency_record i
                          ON i.channel_id = r.channel_id AND i.idem_key = r.channel_key
                        WHERE r.channel_id = 'eod' ORDER BY r.customer_id"""


@pytest.fixture
async def books(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    base = settings.control_dsn.rsplit("/", 1)[0]
    isolated = Isolated(base, tmp_path)
    await isolated.create(DAY)
    isolated.seed(40)  # 160 loans, every eighth due on DAY: 20 customers to debit
    try:
        yield isolated
    finally:
        await isolated.drop()


def _opened_at_once() -> float:
    value = REGISTRY.get_sample_value("repayment_openings_total", {"path": "eod_at_once"})
    return value or 0.0


async def _held_loans(conn: asyncpg.Connection) -> dict[int, list[int]]:
    """Each eod repayment's loans, as held."""
    held: dict[int, list[int]] = {}
    for row in await conn.fetch(
        """SELECT pending_repayment_id, loan_id FROM loan
           WHERE pending_repayment_id IS NOT NULL ORDER BY loan_id"""
    ):
        held.setdefault(row[0], []).append(row[1])
    return held


async def test_the_chunk_opens_what_the_locked_path_would(books: Isolated) -> None:
    due: dict[str, list[asyncpg.Record]] = {}
    for dsn in books.shard_dsns:
        conn = await asyncpg.connect(dsn)
        try:
            due[dsn] = list(await conn.fetch(DUE_SQL, DAY))
        finally:
            await conn.close()
    assert sum(len(rows) for rows in due.values()) >= 10
    before = _opened_at_once()

    [outcome] = await books.eod(DAY)
    assert outcome.closed
    assert await books.problems(accrued_through=DAY) == []

    reference = await books.reference()
    cipher = books.cipher()
    ids = IdGenerator(TEST_WORKER, lambda: True)
    opened = 0
    for dsn, due_rows in due.items():
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(EOD_REPAYMENTS_SQL)
            held = await _held_loans(conn)
            # One repayment per customer with loans due, holding exactly those loans.
            wanted: dict[int, list[int]] = {}
            for r in due_rows:
                wanted.setdefault(r["customer_id"], []).append(r["loan_id"])
            assert {r["customer_id"]: held[r["repayment_id"]] for r in rows} == wanted
            debits = await conn.fetch(
                "SELECT ref_id, amount_fen FROM outbox WHERE kind = 'debit' ORDER BY ref_id"
            )
            # For the batch relay, every row the day-end wrote (ledger 0025).
            lanes = await conn.fetch("SELECT DISTINCT kind, lane FROM outbox")
            assert {r["lane"] for r in lanes} == {"batch"}, lanes
            assert sorted(tuple(d) for d in debits) == sorted(
                (r["repayment_id"], r["total_fen"]) for r in rows
            )
            for row in rows:
                stored = msgspec.json.decode(row["response_body"], type=RepaymentView)
                assert row["status_code"] == 201 and stored.status == "processing"
                # The locked path on the same loans, undone: the same items and figures.
                tr = conn.transaction()
                await tr.start()
                try:
                    await conn.execute(
                        "UPDATE loan SET pending_repayment_id = NULL WHERE customer_id = $1",
                        row["customer_id"],
                    )
                    customer = await conn.fetchrow(
                        "SELECT tenant_id, bank_card_ciphertext FROM customer "
                        "WHERE customer_id = $1",
                        row["customer_id"],
                    )
                    card = cipher.decrypt(
                        customer["bank_card_ciphertext"], context=BANK_CARD, row=row["customer_id"]
                    )
                    body = RepaymentCreate(
                        str(row["customer_id"]),
                        [RepaymentItemCreate(str(i), "due") for i in wanted[row["customer_id"]]],
                        card,
                    )
                    locked = await open_repayment(
                        conn,
                        ids=ids,
                        cipher=cipher,
                        reference=reference,
                        channel=Channel("eod", customer["tenant_id"], "", True),
                        body=body,
                        key=row["channel_key"],
                        today=DAY,
                    )
                finally:
                    await tr.rollback()
                assert stored.items == locked.items
                assert stored.total == locked.total
                assert int(stored.total.replace(".", "")) == row["total_fen"] > 0
                opened += 1
        finally:
            await conn.close()
    assert opened == sum(len({r["customer_id"] for r in rows}) for rows in due.values())
    assert _opened_at_once() - before == opened  # every one of them at once


async def _first_due(books: Isolated) -> tuple[str, int, int]:
    for dsn in books.shard_dsns:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(DUE_SQL + " LIMIT 1", DAY)
        finally:
            await conn.close()
        if row is not None:
            return dsn, row["loan_id"], row["customer_id"]
    raise AssertionError("the seed made no loan due")


async def test_a_loan_changed_after_the_read_takes_the_locked_path(books: Isolated) -> None:
    dsn, loan_id, customer_id = await _first_due(books)
    holder = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    before = _opened_at_once()
    try:
        # A writer holds the loan's plan (a new row version once it commits): the chunk
        # reads the old version, then its statement waits for the lock.
        tr = holder.transaction()
        await tr.start()
        await holder.execute("UPDATE loan_plan SET seq = seq WHERE loan_id = $1", loan_id)
        day_end = asyncio.create_task(books.eod(DAY))
        for _ in range(600):
            waiting = await watcher.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                   AND query LIKE '%open_repayments(%' AND datname = current_database()"""
            )
            if waiting or day_end.done():
                break
            await asyncio.sleep(0.1)
        assert waiting == 1, "the chunk's statement never waited for the held plan"
        await tr.commit()
        [outcome] = await day_end
        assert outcome.closed
        held = await _held_loans(watcher)
        rows = await watcher.fetch(EOD_REPAYMENTS_SQL)
    finally:
        await holder.close()
        await watcher.close()
    mine = [r for r in rows if r["customer_id"] == customer_id]
    assert len(mine) == 1 and loan_id in held[mine[0]["repayment_id"]]
    assert all(held.get(r["repayment_id"]) for r in rows)
    # Everyone else of the shard at once; this customer on the locked path.
    assert await books.problems(accrued_through=DAY) == []
    everyone = 0
    for shard in books.shard_dsns:
        conn = await asyncpg.connect(shard)
        try:
            everyone += await conn.fetchval("SELECT count(*) FROM repayment")
        finally:
            await conn.close()
    assert _opened_at_once() - before == everyone - 1


async def test_a_refused_customer_is_passed_over_and_the_rest_debited(books: Isolated) -> None:
    dsn, _, customer_id = await _first_due(books)
    conn = await asyncpg.connect(dsn)
    try:
        # The card on file is one the customer never bound: CARD_NOT_BOUND.
        await conn.execute(
            "UPDATE customer SET bank_card_ciphertext = $2 WHERE customer_id = $1",
            customer_id,
            books.cipher().encrypt(new_bank_card(), context=BANK_CARD, row=customer_id),
        )
        due = {r["customer_id"] for r in await conn.fetch(DUE_SQL, DAY)}
    finally:
        await conn.close()
    [outcome] = await books.eod(DAY)
    assert outcome.closed
    conn = await asyncpg.connect(dsn)
    try:
        debited = {r["customer_id"] for r in await conn.fetch(EOD_REPAYMENTS_SQL)}
        count = await conn.fetchval(
            "SELECT count(*) FROM idempotency_record WHERE channel_id = 'eod'"
        )
    finally:
        await conn.close()
    assert debited == due - {customer_id}  # CARD_NOT_BOUND: nothing written for it
    assert count == len(debited) > 0


async def test_the_deduction_waits_while_the_relay_has_its_bound_of_debits(
    books: Isolated,
) -> None:
    bound = 2
    eod = msgspec.structs.replace(books.settings.eod, deduct_chunk=1, deduct_in_flight_max=bound)
    books.settings = msgspec.structs.replace(books.settings, eod=eod)
    conns = [await asyncpg.connect(dsn) for dsn in books.shard_dsns]
    open_sql = "SELECT count(*) FROM outbox WHERE kind = 'debit' AND done_at IS NULL"

    async def open_debits() -> list[int]:
        return [int(await c.fetchval(open_sql)) for c in conns]

    day_end: asyncio.Task[list[Any]] | None = None
    try:
        due = [len({r["customer_id"] for r in await c.fetch(DUE_SQL, DAY)}) for c in conns]
        assert max(due) > bound
        day_end = asyncio.create_task(books.eod(DAY))
        # No relay: each shard opens its bound of debits (or all it has) and waits there.
        want = [min(bound, n) for n in due]
        assert await eventually(open_debits, lambda seen: seen == want) == want
        await asyncio.sleep(1.0)
        assert await open_debits() == want and not day_end.done()
        # A relay finishes them as they come: the deduction goes on to the end.
        while not day_end.done():
            for c in conns:
                await c.execute(
                    """UPDATE outbox SET state = 'done', outcome = 'test', done_at = now()
                       WHERE kind = 'debit' AND done_at IS NULL"""
                )
            await asyncio.sleep(0.1)
        [outcome] = await day_end
        assert outcome.closed
        opened = [len({r["customer_id"] for r in await c.fetch(EOD_REPAYMENTS_SQL)}) for c in conns]
        assert opened == due
    finally:
        if day_end is not None and not day_end.done():
            day_end.cancel()
        for c in conns:
            await c.close()

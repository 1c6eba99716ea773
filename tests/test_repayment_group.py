"""Repayments' group completion (`engine.services.repayment_completion`, ledger function
`complete_repayments`) against the stack's databases: completions that queue together
leave in one call and book exactly what the single path (`complete_repayment`) books;
a call that fails writes nothing and each is then completed alone; a loan held by a
long transaction does not stall the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.contract.messages import RepaymentCreate, RepaymentItemCreate
from engine.runtime import metrics
from engine.services import repayment_completion as rc
from engine.services.repayments import complete_repayment, open_repayment
from engine.settings import Settings
from engine.stores import outbox
from engine.stores.control_plane import ControlPlane, control_plane
from engine.stores.outbox import Claimed
from engine.stores.reference import Channel
from sharding.ids import shard_of_id
from sharding.pools import ShardPools
from tests.api_client import ApiClient, new_bank_card
from tests.conftest import EngineProcess
from tests.money_checks import postings_of, repayment_legs, shard_of
from tests.test_metrics import _scrape, _value

DEMO = Channel(channel_id="demo", tenant_id="demo", secret="", active=True)


@pytest.fixture
async def plane(settings: Settings) -> AsyncIterator[ControlPlane]:
    async with control_plane(settings, "test-repayment-group") as plane:
        yield plane


@pytest.fixture
async def pools(settings: Settings) -> AsyncIterator[ShardPools]:
    pools = ShardPools(settings.shard_map(), settings.pool, "test-repayment-group")
    await pools.open()
    yield pools
    await pools.close()


async def _loans(api: ApiClient, n: int) -> list[tuple[str, str, str]]:
    """n customers, each with one disbursed loan of 1,000.00: (customer, card, loan)."""

    async def one() -> tuple[str, str, str]:
        card = new_bank_card()
        customer_id = await api.customer(bank_card=card)
        line_id = await api.line(customer_id, limit="100000.00")
        loan = await api.disbursed_loan(line_id, "1000.00", disburse_to=card)
        return customer_id, card, loan["loan_id"]

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _processing(
    pools: ShardPools, plane: ControlPlane, customer: tuple[str, str, str], key: str
) -> Claimed:
    """Phase A of a prepayment of 12.34, its debit claimed in the same commit (so no
    relay takes it): the repayment waits for core's answer, as after a debit sent."""
    customer_id, card, loan_id = customer
    body = RepaymentCreate(
        customer_id=customer_id,
        items=[RepaymentItemCreate(loan_id=loan_id, mode="prepay", amount="12.34")],
        debit_from=card,
    )
    pool = pools.pool(pools.physical_for(shard_of_id(int(customer_id))).name)
    async with pool.acquire() as conn, conn.transaction():
        view = await open_repayment(
            conn,
            ids=plane.ids,
            cipher=plane.cipher,
            reference=plane.reference.data,
            channel=DEMO,
            body=body,
            key=key,
            today=plane.reference.data.business_date,
        )
        # The answer a request would have stored with its key (completion rewrites it).
        await conn.execute(
            """INSERT INTO idempotency_record (channel_id, idem_key, customer_id,
                   request_sha256, status_code, response_body)
               VALUES ('demo', $1, $2, '\\x00', 201, '{}')""",
            key,
            int(customer_id),
        )
        claimed = await outbox.claim_one(conn, int(view.repayment_id), "debit", 60.0)
    assert claimed is not None
    return claimed


async def _alone(pools: ShardPools, plane: ControlPlane, claimed: Claimed) -> None:
    pool = pools.pool(pools.physical_for(shard_of_id(claimed.customer_id)).name)
    async with pool.acquire() as conn, conn.transaction():
        await complete_repayment(
            conn, plane.ids, plane.reference.data, claimed, succeeded=True, outcome="CORE1"
        )


async def _booked(pools: ShardPools, claimed: Claimed) -> dict[str, Any]:
    """What a completion wrote, with the IDs of its own rows left out."""
    pool = pools.pool(pools.physical_for(shard_of_id(claimed.customer_id)).name)
    async with pool.acquire() as conn:
        repayment = await conn.fetchrow(
            "SELECT status, total_fen FROM repayment WHERE repayment_id = $1", claimed.ref_id
        )
        items = await conn.fetch(
            """SELECT mode, prepay_rule, amount_fen, penalty_fen, interest_fen, principal_fen
               FROM repayment_item WHERE repayment_id = $1""",
            claimed.ref_id,
        )
        loan = await conn.fetchrow(
            """SELECT l.outstanding_principal_fen, l.payment_fen, l.prepaid_fen, l.plan_version,
                      l.status, l.pending_repayment_id, p.principal_fen, p.interest_fen,
                      p.principal_paid_fen, p.interest_paid_fen, c.used_fen
               FROM repayment_item i JOIN loan l ON l.loan_id = i.loan_id
               JOIN loan_plan p ON p.loan_id = l.loan_id
               JOIN credit_line c ON c.credit_line_id = l.credit_line_id
               WHERE i.repayment_id = $1""",
            claimed.ref_id,
        )
        legs = await conn.fetch(
            """SELECT g.code, g.owner_id = i.loan_id AS own, g.amount_fen
               FROM ledger_txn t JOIN ledger_leg g ON g.txn_id = t.txn_id
               JOIN repayment_item i ON i.repayment_id = t.ref_id
               WHERE t.kind = 'repayment' AND t.ref_id = $1 ORDER BY g.leg_no""",
            claimed.ref_id,
        )
        sms = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE kind = 'sms' AND ref_id = $1", claimed.ref_id
        )
        debit = await conn.fetchrow(
            "SELECT state, outcome FROM outbox WHERE outbox_id = $1", claimed.outbox_id
        )
        answer = await conn.fetchval(
            """SELECT response_body FROM idempotency_record r JOIN repayment p
                 ON p.channel_key = r.idem_key AND r.channel_id = p.channel_id
               WHERE p.repayment_id = $1""",
            claimed.ref_id,
        )
    return {
        "repayment": dict(repayment),
        "items": [dict(item) for item in items],
        "loan": None if loan is None else dict(loan),
        "legs": [tuple(leg) for leg in legs],
        "sms": sms,
        "debit": dict(debit),
        "answer_status": bytes(answer).count(b'"status":"succeeded"'),
    }


def _batches() -> tuple[float, float]:
    """(calls, repayments) completed so far by group calls, from their histogram."""
    samples = {s.name: s.value for s in next(iter(metrics.REPAYMENT_BATCH.collect())).samples}
    return (
        samples["repayment_completion_batch_size_count"],
        samples["repayment_completion_batch_size_sum"],
    )


def _same_but_ids(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two completions of twin loans (same principal, date, prepayment): the same to
    the fen, the line's use aside (each customer's own line)."""
    assert a["loan"] is not None and b["loan"] is not None
    a_loan = {k: v for k, v in a["loan"].items() if k != "used_fen"}
    b_loan = {k: v for k, v in b["loan"].items() if k != "used_fen"}
    assert a_loan == b_loan
    assert a["loan"]["used_fen"] == b["loan"]["used_fen"]
    assert {k: v for k, v in a.items() if k != "loan"} == {
        k: v for k, v in b.items() if k != "loan"
    }


async def _complete(
    pools: ShardPools,
    plane: ControlPlane,
    batches: rc.RepaymentBatches,
    claimed: Claimed,
    known: list[dict[str, Any]] | None = None,
) -> bytes | None:
    """Phase B of one claim through `batches` (core answered CORE1): from `known`
    when given, else from its own read."""
    return await rc.complete_at_once(
        pools,
        batches=batches,
        ids=plane.ids,
        reference=plane.reference.data,
        claimed=claimed,
        outcome="CORE1",
        known=known or (),
    )


async def _complete_together(
    pools: ShardPools,
    plane: ControlPlane,
    batches: rc.RepaymentBatches,
    claims: list[Claimed],
    known: dict[int, list[dict[str, Any]]] | None = None,
) -> list[bytes | None]:
    """Phase B of every claim at once, each with its part of `known` when given."""
    return list(
        await asyncio.gather(
            *(_complete(pools, plane, batches, c, (known or {}).get(c.ref_id)) for c in claims)
        )
    )


async def test_completions_read_together_are_booked_in_one_call_as_alone(
    api: ApiClient, pools: ShardPools, plane: ControlPlane
) -> None:
    customers = await _loans(api, 8)
    twins = [await _processing(pools, plane, c, f"grp-a-{c[0]}") for c in customers[:4]]
    grouped = [await _processing(pools, plane, c, f"grp-b-{c[0]}") for c in customers[4:]]
    for claimed in twins:  # the single path, one by one: what "as alone" means
        await _alone(pools, plane, claimed)
    # All four on one shard database's lane only if their customers share it: group by it.
    batches = rc.RepaymentBatches(pools, gather_s=5.0)
    calls0, done0 = _batches()
    bodies = await _complete_together(pools, plane, batches, grouped)
    calls, done = _batches()
    assert all(body is not None and b'"status":"succeeded"' in body for body in bodies)
    assert done - done0 == 4
    databases = {pools.physical_for(shard_of_id(c.customer_id)).name for c in grouped}
    assert calls - calls0 == len(databases) < 4 or len(databases) == 4
    for single, group in zip(twins, grouped, strict=True):
        alone, together = await _booked(pools, single), await _booked(pools, group)
        assert together["repayment"]["status"] == "succeeded"
        assert together["debit"] == {"state": "done", "outcome": "CORE1"}
        assert together["sms"] == 1 and together["answer_status"] == 1
        assert together["loan"]["pending_repayment_id"] is None
        assert sum(leg[2] for leg in together["legs"]) == 0
        _same_but_ids(alone, together)
    # Once only: the same debit answered again books nothing more (the locked path
    # finds the repayment done).
    again = await _complete(pools, plane, batches, grouped[0])
    assert again is None
    assert len((await _booked(pools, grouped[0]))["legs"]) == len(together["legs"])


async def test_one_read_for_many_debits_is_each_ones_own_read(
    api: ApiClient, pools: ShardPools, plane: ControlPlane
) -> None:
    """The relay reads the debits of one core call in one statement (`read_many`) and
    hands each its part as `known`: the same rows as its own read, booked the same."""
    customers = await _loans(api, 4)
    claims = [await _processing(pools, plane, c, f"grp-r-{c[0]}") for c in customers]
    name = pools.physical_for(shard_of_id(claims[0].customer_id)).name
    same = [c for c in claims if pools.physical_for(shard_of_id(c.customer_id)).name == name]
    async with pools.pool(name).acquire() as conn:
        together = await rc.read_many(conn, [c.ref_id for c in same] + [-1])
        alone = {c.ref_id: [dict(r) for r in await conn.fetch(rc.READ_SQL, c.ref_id)] for c in same}
    assert together == alone  # every column, loan by loan; an unknown id is absent
    assert all(alone.values())
    batches = rc.RepaymentBatches(pools, gather_s=5.0)
    bodies = await _complete_together(pools, plane, batches, same, together)
    assert all(body is not None and b'"status":"succeeded"' in body for body in bodies)
    for claimed in same:
        written = await _booked(pools, claimed)
        assert written["repayment"]["status"] == "succeeded" and written["sms"] == 1
        assert sum(leg[2] for leg in written["legs"]) == 0


@contextlib.asynccontextmanager
async def _held(pools: ShardPools, claimed: Claimed) -> AsyncIterator[None]:
    """The repayment's loan locked by another transaction meanwhile."""
    pool = pools.pool(pools.physical_for(shard_of_id(claimed.customer_id)).name)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """SELECT 1 FROM loan WHERE pending_repayment_id = $1 FOR UPDATE""", claimed.ref_id
        )
        yield


async def test_a_failed_group_call_writes_nothing_and_each_is_then_booked_alone(
    api: ApiClient, pools: ShardPools, plane: ControlPlane
) -> None:
    customers = await _loans(api, 3)
    claims = [await _processing(pools, plane, c, f"grp-f-{c[0]}") for c in customers]
    # Same lane for all: put them on the first one's database.
    shard = shard_of_id(claims[0].customer_id)
    same = [c for c in claims if pools.physical_for(shard_of_id(c.customer_id)).name
            == pools.physical_for(shard).name]  # fmt: skip
    batches = rc.RepaymentBatches(pools, gather_s=5.0)
    records = []
    for claimed in same:
        pool = pools.pool(pools.physical_for(shard).name)
        async with pool.acquire() as conn:
            records.append(await conn.fetch(rc.READ_SQL, claimed.ref_id))
    prepared = [
        rc.prepare(
            list(r), ids=plane.ids, reference=plane.reference.data, claimed=c, outcome="CORE1"
        )
        for r, c in zip(records, same, strict=True)
    ]
    assert all(p is not None for p in prepared)
    failures0 = next(iter(metrics.REPAYMENT_BATCH_FAILED.collect())).samples[0].value
    async with _held(pools, same[0]):  # past the call's 250 ms lock time-out
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(batches.book(shard, p.args) for p in prepared if p is not None)),
            10,
        )
    assert outcomes == ["recheck"] * len(same)
    if len(same) > 1:  # one call for all of them, failed whole
        failures = next(iter(metrics.REPAYMENT_BATCH_FAILED.collect())).samples[0].value
        assert failures - failures0 == 1
    for claimed in same:  # nothing of any of them written
        written = await _booked(pools, claimed)
        assert written["repayment"]["status"] == "processing"
        assert written["items"] == [] and written["legs"] == [] and written["sms"] == 0
        assert written["debit"]["state"] == "sending"
    # Each alone, as the relay then does: booked once.
    for claimed in same:
        body = await _complete(pools, plane, rc.RepaymentBatches(pools, batch_max=1), claimed)
        assert body is not None
        written = await _booked(pools, claimed)
        assert written["repayment"]["status"] == "succeeded" and len(written["items"]) == 1


async def test_a_loan_held_long_does_not_stall_the_others(
    api: ApiClient, pools: ShardPools, plane: ControlPlane
) -> None:
    customers = await _loans(api, 4)
    claims = [await _processing(pools, plane, c, f"grp-h-{c[0]}") for c in customers]
    batches = rc.RepaymentBatches(pools, gather_s=0.05)
    loop = asyncio.get_running_loop()
    finished: dict[int, float] = {}

    async def complete(claimed: Claimed) -> None:
        # The relay's way: at once, else alone under locks.
        body = await _complete(pools, plane, batches, claimed)
        if body is None:
            await _alone(pools, plane, claimed)
        finished[claimed.ref_id] = loop.time()

    held = claims[0]
    async with _held(pools, held):
        started = loop.time()
        tasks = [asyncio.create_task(complete(c)) for c in claims]
        await asyncio.wait_for(asyncio.gather(*tasks[1:]), 10)
        others_s = loop.time() - started
        assert held.ref_id not in finished  # still waiting for its loan
        await asyncio.sleep(0.5)
        assert held.ref_id not in finished
    await asyncio.wait_for(tasks[0], 10)
    assert others_s < 2.0, others_s
    for claimed in claims:
        written = await _booked(pools, claimed)
        assert written["repayment"]["status"] == "succeeded", claimed
        assert len(written["items"]) == 1 and written["sms"] == 1
        assert sum(leg[2] for leg in written["legs"]) == 0


async def test_many_repayments_at_once_are_completed_in_fewer_calls_each_once(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """Over HTTP: repayments of different customers sent together are opened at once
    (one statement each) and completed by fewer group calls than repayments; each is
    booked once, to the fen: a prepayment of 12.34 on a loan drawn today is all
    principal (no day of interest yet: MONEY.md), Dr core_settlement / Cr its principal."""
    customers = await _loans(api, 12)
    # The engine completes what it debits inline, the relay what it claimed first.
    urls = (
        f"{engine.ops_url}/metrics",
        f"http://127.0.0.1:{engine.env['ENGINE_RELAY_METRICS_PORT']}/metrics",
    )
    before = [await _scrape(http, url) for url in urls]
    replies = await asyncio.gather(
        *(
            api.post(
                "/v1/repayments",
                {
                    "customer_id": customer_id,
                    "items": [{"loan_id": loan_id, "mode": "prepay", "amount": "12.34"}],
                    "debit_from": card,
                },
            )
            for customer_id, card, loan_id in customers
        )
    )
    replies = [await api.settled_repayment(reply) for reply in replies]
    assert all(r.status == 201 and r.json["status"] == "succeeded" for r in replies), replies
    after = [await _scrape(http, url) for url in urls]

    def delta(name: str, **labels: str) -> float:
        return sum(
            _value(a, name, **labels) - _value(b, name, **labels)
            for a, b in zip(after, before, strict=True)
        )

    assert delta("repayment_openings_total", path="at_once") == 12
    completed = delta("repayment_completion_batch_size_sum")
    calls = delta("repayment_completion_batch_size_count")
    assert completed == 12 and calls < completed, (calls, completed)
    for (customer_id, _, loan_id), reply in zip(customers, replies, strict=True):
        async with shard_of(settings, customer_id) as conn:
            assert await postings_of(conn, "repayment", reply.json["repayment_id"]) == [
                repayment_legs(1234, {loan_id: (0, 0, 1234)})
            ]
            owed = await conn.fetchval(
                "SELECT outstanding_principal_fen FROM loan WHERE loan_id = $1", int(loan_id)
            )
        assert owed == 100_000 - 1234
        assert reply.json["items"][0]["allocation"] == {
            "penalty": "0.00", "interest": "0.00", "principal": "12.34"}  # fmt: skip


async def test_the_function_books_those_as_read_and_sends_back_one_that_changed(
    api: ApiClient, pools: ShardPools, plane: ControlPlane
) -> None:
    """`complete_repayments` called directly: of two repayments of one call, the one
    whose loan changed after the read (its row version) answers 'recheck' with nothing
    written; the other is booked. Arrays of unequal length are refused whole."""
    customers = await _loans(api, 6)
    by_db: dict[str, list[tuple[str, str, str]]] = {}
    for c in customers:
        by_db.setdefault(pools.physical_for(shard_of_id(int(c[0]))).name, []).append(c)
    name, pair = max(by_db.items(), key=lambda kv: len(kv[1]))
    assert len(pair) >= 2, by_db
    claims = [await _processing(pools, plane, c, f"grp-s-{c[0]}") for c in pair[:2]]
    pool = pools.pool(name)
    async with pool.acquire() as conn:
        prepared = []
        for claimed in claims:
            records = list(await conn.fetch(rc.READ_SQL, claimed.ref_id))
            got = rc.prepare(
                records, ids=plane.ids, reference=plane.reference.data, claimed=claimed,
                outcome="CORE1",
            )  # fmt: skip
            assert got is not None
            prepared.append(got)
        # The second's loan row changes after the read (a new row version, same values).
        await conn.execute(
            "UPDATE loan SET updated_at = updated_at WHERE pending_repayment_id = $1",
            claims[1].ref_id,
        )
        arrays = rc.batch_args([p.args for p in prepared], None)
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.fetchval(rc.BATCH_SQL, *arrays[:11], arrays[11][:-1], *arrays[12:])
        outcomes = await conn.fetchval(rc.BATCH_SQL, *arrays)
    assert list(outcomes) == ["booked", "recheck"]
    booked, sent_back = await _booked(pools, claims[0]), await _booked(pools, claims[1])
    assert booked["repayment"]["status"] == "succeeded" and len(booked["items"]) == 1
    assert sum(leg[2] for leg in booked["legs"]) == 0 and booked["sms"] == 1
    assert sent_back["repayment"]["status"] == "processing"
    assert sent_back["items"] == [] and sent_back["legs"] == [] and sent_back["sms"] == 0
    assert sent_back["debit"]["state"] == "sending"

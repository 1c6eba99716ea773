"""Repayments' phase A grouped (`engine.services.repayment_opening`, ledger function
`open_repayments`, migration 0022) against the stack's databases: openings that queue
together leave in one call; each opening of a call is written whole with its durable
record, or not at all ('recheck', 'replay'); with a lease the debit's row is written as
the request's inline claim, which the relay leaves alone until the lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.services import repayment_opening as opening
from engine.services.booking_batch import Args
from engine.settings import Settings
from engine.stores import outbox
from sharding.ids import shard_of_id
from sharding.pools import ShardPools
from tests.api_client import ApiClient, new_bank_card
from tests.conftest import EngineProcess
from tests.test_metrics import _scrape, _value

TODAY = dt.date(2030, 1, 1)  # the call's business date: only compared, never booked here


@pytest.fixture
async def pools(settings: Settings) -> AsyncIterator[ShardPools]:
    pools = ShardPools(settings.shard_map(), settings.pool, "test-repayment-opening")
    await pools.open()
    yield pools
    await pools.close()


async def _customer(api: ApiClient, loans: int = 1) -> tuple[str, str, list[str]]:
    """A customer with `loans` disbursed loans of 1,000.00: (customer, card, loans)."""
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id, limit="100000.00")
    drawn = [await api.disbursed_loan(line_id, "1000.00", disburse_to=card) for _ in range(loans)]
    return customer_id, card, [loan["loan_id"] for loan in drawn]


async def _same_database(
    api: ApiClient, pools: ShardPools, n: int
) -> tuple[str, list[tuple[str, str, list[str]]]]:
    """n customers whose shard is on one database (one call may only hold those)."""
    by_db: dict[str, list[tuple[str, str, list[str]]]] = {}
    while True:
        for customer in await asyncio.gather(*(_customer(api) for _ in range(4))):
            name = pools.physical_for(shard_of_id(int(customer[0]))).name
            by_db.setdefault(name, []).append(customer)
            if len(by_db[name]) == n:
                return name, by_db[name]


async def _args(
    conn: asyncpg.Connection,
    customer: tuple[str, str, list[str]],
    key: str,
    *,
    repayment_id: int,
    lease_s: float | None = 60.0,
    nonce: str | None = None,
) -> Args:
    """One opening's arguments as the engine lays them out, the loans' row versions as
    they are now."""
    customer_id = int(customer[0])
    loans = [
        (r["loan_id"], r["loan_xmin"], r["plan_xmin"])
        for r in await conn.fetch(
            """SELECT loan.loan_id, loan.xmin::text AS loan_xmin, p.xmin::text AS plan_xmin
               FROM loan JOIN loan_plan p ON p.loan_id = loan.loan_id
               WHERE loan.loan_id = ANY($1::bigint[]) ORDER BY loan.loan_id""",
            [int(loan_id) for loan_id in customer[2]],
        )
    ]
    return (
        "demo", key, b"\x01" * 32, 201, b'{"status":"processing"}', nonce,
        repayment_id, customer_id, "demo", "demo", 1234, "622***1234", b"\x02", TODAY, "[]",
        loans, repayment_id + 1, f'{{"reference": "R{repayment_id}"}}', lease_s,
    )  # fmt: skip


async def _written(conn: asyncpg.Connection, args: Args) -> dict[str, Any]:
    """What an opening wrote: its durable record, repayment, loans' hold, debit row."""
    repayment_id = args[6]
    loans = args[15]
    assert isinstance(loans, list)
    return {
        "record": await conn.fetchval(
            "SELECT count(*) FROM idempotency_record WHERE channel_id = 'demo' AND idem_key = $1",
            args[1],
        ),
        "repayment": await conn.fetchval(
            "SELECT status FROM repayment WHERE repayment_id = $1", repayment_id
        ),
        "held": [
            await conn.fetchval("SELECT pending_repayment_id FROM loan WHERE loan_id = $1", lo[0])
            for lo in loans
        ],
        "debit": await conn.fetchrow(
            """SELECT state, attempts, lease_until > now() + interval '50 seconds' AS leased,
                      last_sent_at, amount_fen
               FROM outbox WHERE ref_id = $1 AND kind = 'debit'""",
            repayment_id,
        ),
    }


@contextlib.asynccontextmanager
async def _undone(pools: ShardPools, name: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction that is rolled back at the end: what the calls
    write is looked at from inside, and never reaches the session's relay."""
    async with pools.pool(name).acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


async def _call(conn: asyncpg.Connection, items: list[Args]) -> list[str]:
    outcomes = await opening.OPENINGS.call(conn, items, None)
    assert isinstance(outcomes, list)
    return [str(o) for o in outcomes]


async def test_a_call_opens_each_whole_or_not_at_all(api: ApiClient, pools: ShardPools) -> None:
    """Of three openings in one call: one is booked (its debit row as the inline claim:
    'sending', attempt 1, leased, the send time the call answered), one whose loan
    changed after the read is sent back, one whose key is already recorded is a replay;
    nothing of those two is written. Without a lease the debit's row is left 'pending'
    for the relay."""
    name, customers = await _same_database(api, pools, 4)
    base = 7_000_000_000_000 + int(customers[0][0]) % 1_000_000_000 * 10
    async with _undone(pools, name) as conn:
        items = [
            await _args(
                conn,
                c,
                f"open-{c[0]}-{i}",
                repayment_id=base + 2 * i,
                lease_s=None if i == 1 else 60.0,
            )
            for i, c in enumerate(customers)
        ]
        # The third's loan changes after the read; the fourth's key is already recorded.
        await conn.execute(
            "UPDATE loan SET updated_at = updated_at WHERE loan_id = $1", int(customers[2][2][0])
        )
        await conn.execute(
            """INSERT INTO idempotency_record (channel_id, idem_key, customer_id,
                   request_sha256, status_code, response_body)
               VALUES ('demo', $1, $2, '\\x00', 201, '{}')""",
            items[3][1],
            int(customers[3][0]),
        )
        # One lease per call (the engine's lanes never mix them): the unleased one alone.
        outcomes = [*await _call(conn, [items[1]]), *await _call(conn, items[:1] + items[2:])]
        assert [o.split(" ")[0] for o in outcomes] == ["booked", "booked", "recheck", "replay"]
        booked, pending_booked = opening.booked_of(outcomes[1]), opening.booked_of(outcomes[0])
        assert booked is not None and pending_booked is not None
        sent_at = booked.sent_at
        # The opening's transaction ID is the row version its hold leaves on the loan.
        assert booked.xid == await conn.fetchval(
            "SELECT xmin::text FROM loan WHERE loan_id = $1", items[0][15][0][0]
        )
        claimed, sent_back, replayed = [await _written(conn, items[i]) for i in (0, 2, 3)]
        pending = await _written(conn, items[1])
    assert claimed["record"] == 1 and claimed["repayment"] == "processing"
    assert claimed["held"] == [items[0][6]]
    assert dict(claimed["debit"]) == {
        "state": "sending", "attempts": 1, "leased": True, "last_sent_at": sent_at,
        "amount_fen": 1234}  # fmt: skip
    assert pending["debit"]["state"] == "pending" and pending["debit"]["attempts"] == 0
    assert pending["debit"]["last_sent_at"] is None
    for nothing in (sent_back, replayed):
        assert nothing["repayment"] is None and nothing["debit"] is None
        assert nothing["held"] == [None]
    assert sent_back["record"] == 0


async def test_a_loan_or_key_twice_in_a_call_is_sent_back(
    api: ApiClient, pools: ShardPools
) -> None:
    """The engine never puts one loan or one key twice in a call; if it did, the
    function books neither (one hold, one durable record per repayment)."""
    name, customers = await _same_database(api, pools, 2)
    base = 7_100_000_000_000 + int(customers[0][0]) % 1_000_000_000 * 10
    async with _undone(pools, name) as conn:
        one = await _args(conn, customers[0], f"twice-{customers[0][0]}", repayment_id=base)
        same_loan = await _args(conn, customers[0], f"twice-b-{customers[0][0]}",
                                repayment_id=base + 2)  # fmt: skip
        other = await _args(conn, customers[1], f"twice-{customers[0][0]}", repayment_id=base + 4)
        assert await _call(conn, [one, same_loan]) == ["recheck", "recheck"]
        assert await _call(conn, [one, other]) == ["recheck", "recheck"]
        for args in (one, same_loan, other):
            written = await _written(conn, args)
            assert written["repayment"] is None and written["record"] == 0
            assert written["held"] == [None]


async def test_a_replayed_nonce_fails_the_call_whole(api: ApiClient, pools: ShardPools) -> None:
    """A nonce seen before fails the statement: neither opening of the call is written
    (the engine then runs each on the locked path, which refuses the replay)."""
    name, customers = await _same_database(api, pools, 2)
    base = 7_200_000_000_000 + int(customers[0][0]) % 1_000_000_000 * 10
    nonce = f"nonce-{customers[0][0]}"
    async with _undone(pools, name) as conn:
        await conn.execute(
            "INSERT INTO request_nonce (channel_id, nonce) VALUES ('demo', $1)", nonce
        )
        items = [
            await _args(conn, customers[0], f"n-{customers[0][0]}", repayment_id=base),
            await _args(
                conn, customers[1], f"n-{customers[1][0]}", repayment_id=base + 2, nonce=nonce
            ),
        ]
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():  # a savepoint: the failed call undone alone
                await _call(conn, items)
        for args in items:
            written = await _written(conn, args)
            assert written["repayment"] is None and written["record"] == 0


async def test_the_relay_leaves_a_claimed_debit_until_its_lease_runs_out(
    api: ApiClient, pools: ShardPools
) -> None:
    """A debit row written as the request's claim is not claimed again while leased
    (the request is sending it); once the lease ran out, the next claim asks core
    first (prior state 'sending': an inquiry, never a second debit)."""
    name, customers = await _same_database(api, pools, 1)
    base = 7_300_000_000_000 + int(customers[0][0]) % 1_000_000_000 * 10
    async with _undone(pools, name) as conn:
        args = await _args(conn, customers[0], f"lease-{customers[0][0]}", repayment_id=base)
        [outcome] = await _call(conn, [args])
        assert outcome.startswith("booked ")
        assert await outbox.claim_one(conn, base, "debit", 60.0) is None
        # First in the relay's order; still leased: another row (or none) is claimed.
        await conn.execute(
            "UPDATE outbox SET next_attempt_at = '1990-01-01' WHERE ref_id = $1", base
        )
        assert all(row.ref_id != base for row in await outbox.claim(conn, 1, 60.0))
        await conn.execute(
            "UPDATE outbox SET lease_until = now() - interval '1 second' WHERE ref_id = $1",
            base,
        )
        taken = await outbox.claim(conn, 1, 60.0)
    assert len(taken) == 1 and taken[0].needs_inquiry and taken[0].prior_state == "sending"


async def test_openings_sent_together_leave_in_fewer_calls_each_once(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    """Over HTTP: repayments of different customers sent together are opened by fewer
    calls than repayments, each opened once, debited once inline and completed at once
    without a read of its own, and succeeded."""
    customers = await asyncio.gather(*(_customer(api) for _ in range(12)))
    url = f"{engine.ops_url}/metrics"
    before = await _scrape(http, url)
    replies = await asyncio.gather(
        *(
            api.post(
                "/v1/repayments",
                {
                    "customer_id": customer_id,
                    "items": [{"loan_id": loans[0], "mode": "prepay", "amount": "12.34"}],
                    "debit_from": card,
                },
            )
            for customer_id, card, loans in customers
        )
    )
    replies = [await api.settled_repayment(reply) for reply in replies]
    assert all(r.status == 201 and r.json["status"] == "succeeded" for r in replies), replies
    after = await _scrape(http, url)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("repayment_openings_total", path="at_once") == 12
    opened, calls = (
        delta("repayment_opening_batch_size_sum"),
        delta("repayment_opening_batch_size_count"),
    )
    assert opened == 12 and calls < opened, (calls, opened)
    # Each debited inline and completed at once from phase A's own read (the loans as
    # its hold left them): a wrong row version or receivable would send it back to the
    # locked path (counted "locked").
    assert delta("repayment_completions_total", path="at_once") == 12
    assert delta("repayment_completions_total", path="locked") == 0
    assert len({r.json["repayment_id"] for r in replies}) == 12

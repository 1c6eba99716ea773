"""Money through core banking (issue 5): failures, time-outs, a relay killed
mid-batch, core down, one SMS per combined repayment, reconciliation."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.adapters.core_bank import CoreBankClient
from engine.services.reconcile import reconcile
from engine.settings import Settings
from ledger.store import trial_balance
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, new_bank_card
from tests.conftest import EngineProcess, ServiceProcess, free_port
from tests.fault_proxy import FaultProxy
from tests.money_checks import (
    core_clock,
    debits_at_core,
    loan_books,
    postings_of,
    shard_of,
    unbalanced_shards,
)
from tests.waiting import eventually

SHANGHAI_TODAY = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()


async def _knobs(http: aiohttp.ClientSession, fake: ServiceProcess, **knobs: Any) -> None:
    async with http.post(f"{fake.base_url}/fake/knobs", json=knobs) as resp:
        assert resp.status == 200, await resp.text()


async def _records(
    http: aiohttp.ClientSession, fake: ServiceProcess, path: str
) -> list[dict[str, Any]]:
    async with http.get(f"{fake.base_url}{path}") as resp:
        result: list[dict[str, Any]] = await resp.json()
        return result


async def _duplicates(http: aiohttp.ClientSession, fake: ServiceProcess) -> float:
    """How many payment or debit requests core saw for a reference it already had."""
    async with http.get(f"{fake.base_url}/metrics") as resp:
        text = await resp.text()
    pattern = (
        r'fake_core_requests_total\{endpoint="(payments|debits)",outcome="duplicate"\} ([0-9.e+]+)'
    )
    return sum(float(m.group(2)) for m in re.finditer(pattern, text))


@pytest.fixture
async def healthy_core(engine: EngineProcess, http: aiohttp.ClientSession) -> AsyncIterator[None]:
    yield
    await _knobs(http, engine.fakes.core, latency_ms=5, fail_ratio=0, timeout_ratio=0)


async def _loan_statuses(settings: Settings, customer_id: str) -> dict[int, str]:
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        rows = await conn.fetch(
            "SELECT loan_id, status FROM loan WHERE customer_id = $1", int(customer_id)
        )
    finally:
        await conn.close()
    return {row["loan_id"]: row["status"] for row in rows}


async def _settle(
    settings: Settings, customer_ids: list[str], timeout_s: float = 60.0
) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses: dict[int, str] = {}
        for customer_id in customer_ids:
            statuses |= await _loan_statuses(settings, customer_id)
        if "disbursing" not in statuses.values() or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.25)


async def test_failures_and_timeouts_under_concurrent_drawdowns(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
    healthy_core: None,
) -> None:
    core = engine.fakes.core
    duplicates_before = await _duplicates(http, core)
    await _knobs(http, core, fail_ratio=0.2, timeout_ratio=0.1, timeout_hang_s=2)
    customers = [await api.customer() for _ in range(20)]
    lines = {c: await api.line(c, limit="100000.00") for c in customers}
    replies = await asyncio.gather(
        *(api.drawdown(lines[c], f"{1000 + n}.00") for c in customers for n in range(10))
    )
    assert all(r.status == 201 and r.json["status"] == "disbursing" for r in replies), replies[:3]
    statuses = await _settle(settings, customers)
    assert len(statuses) == 200
    assert set(statuses.values()) <= {"disbursed", "failed"}, statuses
    counts = {s: list(statuses.values()).count(s) for s in ("disbursed", "failed")}
    assert counts["failed"] > 10 and counts["disbursed"] > 100, counts
    # Core paid each disbursed loan exactly once, and no failed one.
    paid = {
        r["reference"]: r
        for r in await _records(http, core, "/fake/records")
        if r["status"] == "succeeded"
    }
    for loan_id, status in statuses.items():
        assert (f"D{loan_id}" in paid) == (status == "disbursed"), (loan_id, status)
    assert await _duplicates(http, core) == duplicates_before  # never sent twice
    # Lines hold exactly the principal of the disbursed loans.
    amounts = {r.json["loan_id"]: r.json["principal"] for r in replies}
    for customer_id, line_id in lines.items():
        line = (await api.get(f"/v1/credit-lines/{line_id}")).json
        mine = await _loan_statuses(settings, customer_id)
        expected = sum(
            int(amounts[str(i)].replace(".", "")) for i, s in mine.items() if s == "disbursed"
        )
        assert int(line["used"].replace(".", "")) == expected
    assert await unbalanced_shards(settings) == []
    # Reconciliation: core's file and the ledger agree on every movement of this test.
    report = await reconcile(
        CoreBankClient(http, core.base_url, 10), [s.dsn for s in settings.shards], SHANGHAI_TODAY
    )
    ours = {f"D{loan_id}" for loan_id in statuses}
    assert [b for b in report.breaks if b.reference in ours] == []
    assert [b for b in report.breaks if b.problem != "missing_at_core"] == []


async def _leased(settings: Settings, customer_id: str) -> int:
    """This customer's payment orders leased by a relay now (`sending`, lease running)."""
    async with shard_of(settings, customer_id) as conn:
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM outbox WHERE customer_id = $1 AND kind = 'disburse'
                   AND state = 'sending' AND lease_until > now()""",
                int(customer_id),
            )
        )


async def _money_of(
    settings: Settings, http: aiohttp.ClientSession, core: ServiceProcess, customer_id: str,
    line_id: str, loans: dict[int, int],
) -> None:  # fmt: skip
    """Each loan paid once at core, of its principal; the line holds exactly their
    principal; each loan's principal account holds it; the shard's books balance."""
    paid = [r for r in await _records(http, core, "/fake/records")
            if r["reference"] in {f"D{i}" for i in loans}]  # fmt: skip
    assert sorted((r["reference"], r["amount_fen"], r["status"]) for r in paid) == sorted(
        (f"D{i}", fen, "succeeded") for i, fen in loans.items())  # fmt: skip
    async with shard_of(settings, customer_id) as conn:
        used = await conn.fetchval(
            "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(line_id)
        )
        assert used == sum(loans.values())
        for loan_id, fen in loans.items():
            assert (await loan_books(conn, str(loan_id))).principal == fen
        assert (await trial_balance(conn, deep=True)).balanced


async def test_relay_killed_mid_batch(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
    healthy_core: None,
) -> None:
    """A relay of the test's own reaches core through a proxy that sees each request go
    out and its answer come back; it is SIGKILLed while its payment orders are leased and
    a call to core is open, and core books that call after the relay is dead. The next
    relay inquires: every loan paid exactly once."""
    assert engine.relay is not None
    core = engine.fakes.core
    engine.relay.stop()
    proxy = FaultProxy(core.port).start()
    ours: ServiceProcess | None = None
    try:
        duplicates_before = await _duplicates(http, core)
        await _knobs(http, core, latency_ms=400)  # each core call open 400 ms (time-out 1 s)
        card = new_bank_card()
        customer_id = await api.customer(bank_card=card)
        line_id = await api.line(customer_id)
        loans = {}
        for _ in range(40):
            reply = await api.drawdown(line_id, "100.00", disburse_to=card)
            assert reply.status == 201, reply
            loans[int(reply.json["loan_id"])] = 10_000
        metrics_port = free_port()
        env = engine.env | {"ENGINE_CORE_URL": f"http://127.0.0.1:{proxy.port}",
                            "ENGINE_RELAY_METRICS_PORT": str(metrics_port)}  # fmt: skip
        ours = ServiceProcess("relay", "engine", ["relay"], env, metrics_port)

        async def in_flight() -> tuple[int, int]:
            return await _leased(settings, customer_id), proxy.calls_open

        seen = await eventually(in_flight, lambda s: s[0] > 0 and s[1] > 0, timeout_s=30,
                                interval_s=0.01)  # fmt: skip
        killed_at = core_clock()
        ours.kill()
        assert seen[0] > 0 and seen[1] > 0, "the kill must land with rows leased, a call open"
        assert await _leased(settings, customer_id) > 0  # nobody closed them
        # No relay runs now: a payment core books from here was sent by the dead relay.
        late = await eventually(
            lambda: _records(http, core, "/fake/records"),
            lambda rs: any(r["reference"] in {f"D{i}" for i in loans}
                           and r["booked_at"] >= killed_at for r in rs),
            timeout_s=10,
        )  # fmt: skip
        assert any(r["reference"] in {f"D{i}" for i in loans} and r["booked_at"] >= killed_at
                   for r in late), "core must book a call the relay left open"  # fmt: skip
        await _knobs(http, core, latency_ms=5)
        engine.relay.restart()
        statuses = await _settle(settings, [customer_id], timeout_s=60)
    finally:
        if ours is not None:
            ours.kill()
        proxy.stop()
        if engine.relay.proc.poll() is not None:
            engine.relay.restart()
    assert set(statuses.values()) == {"disbursed"}, statuses
    await _money_of(settings, http, core, customer_id, line_id, loans)
    assert await _duplicates(http, core) == duplicates_before  # nothing sent twice


async def _attempts(settings: Settings, customer_id: str) -> list[int]:
    async with shard_of(settings, customer_id) as conn:
        rows = await conn.fetch(
            "SELECT attempts FROM outbox WHERE customer_id = $1 AND kind = 'disburse'",
            int(customer_id),
        )
    return [int(r[0]) for r in rows]


async def test_core_down_then_back(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    core = engine.fakes.core
    duplicates_before = await _duplicates(http, core)
    core.stop()
    try:
        card = new_bank_card()
        customer_id = await api.customer(bank_card=card)
        line_id = await api.line(customer_id)
        replies = [await api.drawdown(line_id, "500.00", disburse_to=card) for _ in range(5)]
        assert all(r.status == 201 and r.json["status"] == "disbursing" for r in replies)
        # Until the relay has tried each order and failed (claimed again after its lease).
        tries = await eventually(lambda: _attempts(settings, customer_id),
                                 lambda a: len(a) == 5 and min(a) >= 2, timeout_s=60)  # fmt: skip
        assert len(tries) == 5 and min(tries) >= 2, tries
        assert set((await _loan_statuses(settings, customer_id)).values()) == {"disbursing"}
    finally:
        core.restart()
        core.wait_ready()
    statuses = await _settle(settings, [customer_id], timeout_s=60)
    assert set(statuses.values()) == {"disbursed"}, statuses
    await _money_of(settings, http, core, customer_id, line_id, dict.fromkeys(statuses, 50_000))
    assert await _duplicates(http, core) == duplicates_before


async def test_combined_repayment_sends_one_sms_naming_all_loans_and_the_channel(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id)
    loans = [await api.disbursed_loan(line_id, "2000.00", disburse_to=card) for _ in range(3)]
    body = {
        "customer_id": customer_id,
        "debit_from": card,
        "items": [{"loan_id": loan["loan_id"], "mode": "payoff"} for loan in loans],
    }
    reply = await api.settled_repayment(await api.post("/v1/repayments", body))
    assert reply.status == 201 and reply.json["status"] == "succeeded", reply
    receipts = [loan["receipt_no"] for loan in loans]

    def texts(messages: list[dict[str, Any]], word: str) -> list[dict[str, Any]]:
        return [m for m in messages if any(r in m["text"] for r in receipts) and word in m["text"]]

    messages = await eventually(
        lambda: _records(http, engine.fakes.sms, "/fake/messages"),
        lambda ms: len(texts(ms, "还款")) >= 1 and len(texts(ms, "借款")) >= 3,
        timeout_s=30, interval_s=0.2,
    )  # fmt: skip
    naming = texts(messages, "还款")
    assert len(naming) == 1, naming
    assert all(receipt in naming[0]["text"] for receipt in receipts)
    assert card not in naming[0]["text"] and card[-4:] in naming[0]["text"]
    drawdown_texts = texts(messages, "借款")
    assert len(drawdown_texts) == 3  # one per drawdown, once paid
    # Every message names the channel as customers know it, never its internal ID.
    for message in [*naming, *drawdown_texts]:
        assert "通过演示手机银行" in message["text"], message
        assert "通过demo" not in message["text"], message


async def test_slow_core_leaves_repayment_processing_then_completes(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
    healthy_core: None,
) -> None:
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id)
    loan = await api.disbursed_loan(line_id, "3000.00", disburse_to=card)
    duplicates_before = await _duplicates(http, engine.fakes.core)
    since = core_clock()
    await _knobs(http, engine.fakes.core, latency_ms=1500)  # above the 1 s inline wait
    item = {"loan_id": loan["loan_id"], "mode": "payoff"}
    body = {"customer_id": customer_id, "debit_from": card, "items": [item]}
    reply = await api.post("/v1/repayments", body)
    assert reply.status == 201 and reply.json["status"] == "processing", reply
    # Phase A answered from what its transaction held: the repayment as a read shows it.
    assert (await api.get(f"/v1/repayments/{reply.json['repayment_id']}")).json == reply.json
    again = await api.post("/v1/repayments", body)
    assert (again.status, again.json["code"]) == (422, "REPAYMENT_IN_PROGRESS")
    await _knobs(http, engine.fakes.core, latency_ms=5)
    view = (await api.settled_repayment(reply, timeout_s=30)).json
    assert view["status"] == "succeeded", view
    assert (await api.get(f"/v1/loans/{loan['loan_id']}")).json["status"] == "settled"
    # Paid off on the day drawn: 3,000.00 of principal, debited once, booked once.
    repayment_id = view["repayment_id"]
    debits = await debits_at_core(http, engine.fakes.core.base_url, card, since)
    assert [(d["reference"], d["amount_fen"], d["status"]) for d in debits] == [
        (f"R{repayment_id}", 300_000, "succeeded")]  # fmt: skip
    assert await _duplicates(http, engine.fakes.core) == duplicates_before
    async with shard_of(settings, customer_id) as conn:
        assert await postings_of(conn, "repayment", repayment_id) == [
            {"core_settlement": 300_000, f"loan_principal:{loan['loan_id']}": -300_000}]  # fmt: skip
        books = await loan_books(conn, loan["loan_id"])
        assert (books.principal, books.interest_receivable, books.penalty_receivable) == (0, 0, 0)
    assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "0.00"


async def test_sms_gateway_down_never_holds_up_money_and_each_sms_goes_once(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    """The gateway refuses everything while loans are paid: every loan is disbursed
    regardless; once it recovers, each drawdown's SMS goes out exactly once."""
    sms = engine.fakes.sms
    await _knobs(http, sms, fail_ratio=1)
    try:
        customer_id = await api.customer()
        line_id = await api.line(customer_id)
        replies = await asyncio.gather(*(api.drawdown(line_id, "1000.00") for _ in range(8)))
        assert all(r.status == 201 for r in replies), replies
        for reply in replies:  # money does not wait for the customer's SMS
            await api.wait_for_loan(reply.json["loan_id"])
    finally:
        await _knobs(http, sms, fail_ratio=0)
    receipts = {r.json["receipt_no"] for r in replies}
    deadline = time.monotonic() + 30
    while True:
        messages = await _records(http, sms, "/fake/messages")
        sent = [m for m in messages if any(r in m["text"] for r in receipts)]
        if len(sent) >= len(receipts) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert sorted(r for m in sent for r in receipts if r in m["text"]) == sorted(receipts)

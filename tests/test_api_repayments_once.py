"""Repayments move money once per Idempotency-Key (issue 17, what the battery left out):
a retry of a finished repayment and of one still `processing`, ten copies of one request
at once, Redis emptied before a retry, the engine SIGKILLed in a burst of repayments,
a debit core refuses, and inquiries that fail until core answers one.

Each test checks money three ways, against figures worked out by hand from MONEY.md
(tests/money_by_hand.py, not the engine's calculator): the fake core's records (one
debit per repayment, on the customer's card, of the repayment's amount), the ledger
(the repayment's one posting: Dr core_settlement, Cr the loan's principal and interest
receivable; each loan's accounts) and the loan's plan as the API shows it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from engine.settings import Settings
from ledger.store import trial_balance
from tests import money_by_hand as hand
from tests.api_client import ApiClient, Reply, new_bank_card
from tests.battery import IN_FLIGHT, Op, retry_until_final, send
from tests.conftest import EngineProcess, Fakes
from tests.money_checks import (
    core_clock,
    debits_at_core,
    duplicate_requests,
    loan_books,
    postings_of,
    repayment_legs,
    set_business_date,
    set_knobs,
    shard_of,
)
from tests.waiting import eventually

RATE = Decimal("4.35")
PRINCIPAL = 1_200_000  # 12,000.00 over 12 months, equal installments
DAYS = 10  # the repayments below are made ten days after the drawdown


@dataclass
class Borrower:
    customer_id: str
    card: str  # registered with the customer; drawn down to and debited from
    line_id: str
    loan_id: str
    start: dt.date


async def _borrower(api: ApiClient, amount: str = "12000.00") -> Borrower:
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id, limit="100000.00")
    loan = await api.disbursed_loan(line_id, amount, disburse_to=card)
    return Borrower(
        customer_id, card, line_id, loan["loan_id"], dt.date.fromisoformat(loan["start_date"])
    )


def _prepay(who: Borrower, amount: str, loan_id: str | None = None) -> dict[str, Any]:
    item = {"loan_id": loan_id or who.loan_id, "mode": "prepay", "amount": amount,
            "prepay_rule": "reduce_nearest"}  # fmt: skip
    return {"customer_id": who.customer_id, "debit_from": who.card, "items": [item]}


@pytest.fixture
async def ten_days_on(
    api: ApiClient, engine: EngineProcess, control_conn: asyncpg.Connection
) -> AsyncIterator[Borrower]:
    """A borrower of 12,000.00, and the business date ten days after the drawdown
    (restored afterwards)."""
    original = await control_conn.fetchval("SELECT business_date FROM business_clock")
    who = await _borrower(api)
    await set_business_date(
        control_conn, engine.base_url, who.loan_id, who.start + dt.timedelta(days=DAYS)
    )
    yield who  # its loan stays disbursed in every test here: it is the date's probe
    await set_business_date(control_conn, engine.base_url, who.loan_id, original)


@pytest.fixture
async def core_knobs(engine: EngineProcess, http: aiohttp.ClientSession) -> AsyncIterator[str]:
    """The session's fake core (its URL); its knobs back to the suite's afterwards."""
    yield engine.fakes.core.base_url
    await set_knobs(http, engine.fakes.core.base_url, latency_ms=5, fail_ratio=0, timeout_ratio=0,
                    timeout_hang_s=2, inquiry_fail_ratio=0, batch_timeout_mode="item")  # fmt: skip


async def _repayment_ids(settings: Settings, customer_id: str) -> list[str]:
    async with shard_of(settings, customer_id) as conn:
        rows = await conn.fetch(
            "SELECT repayment_id FROM repayment WHERE customer_id = $1", int(customer_id)
        )
    return [str(r[0]) for r in rows]


async def _check_prepaid_3000(
    settings: Settings, api: ApiClient, http: aiohttp.ClientSession, core_url: str,
    who: Borrower, reply: Reply, since: str,
) -> None:  # fmt: skip
    """Money after one prepayment of 3,000.00 on day ten, reduce_nearest, worked out
    by hand: core debited the card once, the ledger booked it once, the plan is MONEY.md's."""
    principal, interest = hand.prepaid_principal(300_000, RATE, DAYS)
    assert (principal, interest) == (299_638, 362)  # 299,638 × 4.35 % / 360 × 10 = 362.06
    total = principal + interest
    view = reply.json
    assert view["status"] == "succeeded", view
    assert view["total"] == hand.yuan(total)
    assert view["items"][0]["allocation"] == {
        "penalty": "0.00", "interest": hand.yuan(interest), "principal": hand.yuan(principal)}  # fmt: skip
    # Core: one debit on the customer's card, of the repayment's amount, under its reference.
    debits = await debits_at_core(http, core_url, who.card, since)
    assert [(d["reference"], d["amount_fen"], d["status"]) for d in debits] == [
        (f"R{view['repayment_id']}", total, "succeeded")
    ]
    # The books: one repayment, one posting, the loan's accounts moved by exactly it.
    assert await _repayment_ids(settings, who.customer_id) == [view["repayment_id"]]
    async with shard_of(settings, who.customer_id) as conn:
        assert await postings_of(conn, "repayment", view["repayment_id"]) == [
            repayment_legs(total, {who.loan_id: (0, interest, principal)})
        ]
        books = await loan_books(conn, who.loan_id)
        assert (books.principal, books.interest_receivable, books.penalty_receivable) == (
            PRINCIPAL - principal, -interest, 0)  # fmt: skip
        used = await conn.fetchval(
            "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(who.line_id)
        )
        assert used == PRINCIPAL - principal
        assert (await trial_balance(conn, deep=True)).balanced
    # The plan: the first installments carry the prepaid principal.
    schedule = (await api.get(f"/v1/loans/{who.loan_id}/schedule")).json
    want = hand.prepay_before_first_due(PRINCIPAL, RATE, 12, who.start, principal, "reduce_nearest")
    assert [(i["due_date"], hand.fen(i["principal"]), hand.fen(i["interest"]))
            for i in schedule["installments"]] == [
        (r.due_date.isoformat(), r.principal_fen, r.interest_fen) for r in want]  # fmt: skip
    assert schedule["plan_version"] == 2


async def test_same_key_after_success_replays_and_moves_nothing(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    first = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert first.status == 201 and first.json["status"] == "succeeded", first
    again = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert (again.status, again.headers.get("Idempotent-Replayed")) == (201, "true")
    assert again.json == first.json
    other = await api.post("/v1/repayments", _prepay(who, "100.00"), key=key)
    assert (other.status, other.json["code"]) == (422, "IDEMPOTENCY_KEY_REUSED"), other
    await _check_prepaid_3000(settings, api, http, core_knobs, who, first, since)


async def test_same_key_while_processing_names_the_same_repayment(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    """Core slower than the inline wait: the answer is `processing`; retries meanwhile
    replay it (never a second debit), and after the relay's completion the final state."""
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    duplicates = await duplicate_requests(http, core_knobs)
    await set_knobs(http, core_knobs, latency_ms=2500)  # the inline wait is 1 s
    first = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert first.status == 201 and first.json["status"] == "processing", first
    retries = await asyncio.gather(
        *(api.post("/v1/repayments", _prepay(who, "3000.00"), key=key) for _ in range(3))
    )
    for retry in retries:
        assert retry.status in (201, 409), retry  # 409: the first still holds the key
        if retry.status == 201:
            assert retry.json["repayment_id"] == first.json["repayment_id"], retry
    await set_knobs(http, core_knobs, latency_ms=5)
    final = await api.settled_repayment(first)
    assert final.json["status"] == "succeeded", final
    after = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert after.status == 201 and after.json == final.json, after
    await _check_prepaid_3000(settings, api, http, core_knobs, who, final, since)
    assert await duplicate_requests(http, core_knobs) == duplicates  # nothing sent twice


async def test_a_twin_during_the_inline_debit_is_told_to_retry(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    """The first request has committed phase A (its record says `processing`) and waits
    for core's debit inline, holding the key: a twin with the same key is 409
    IDEMPOTENCY_IN_FLIGHT with Retry-After, not the record's `processing` replayed (a
    channel would take it for the answer). Once the first is answered, the key replays
    its final answer; core debited once."""
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    duplicates = await duplicate_requests(http, core_knobs)
    await set_knobs(http, core_knobs, latency_ms=500)  # inside the inline wait of 1 s
    body = _prepay(who, "3000.00")
    first = asyncio.ensure_future(api.post("/v1/repayments", body, key=key))
    # Phase A committed: the debit is with core now.
    await eventually(lambda: _repayment_ids(settings, who.customer_id), bool, interval_s=0.005)
    twin = await api.post("/v1/repayments", body, key=key)
    assert not first.done(), "the twin must come while the first waits for core"
    assert (twin.status, twin.json.get("code")) == (409, "IDEMPOTENCY_IN_FLIGHT"), twin
    assert twin.headers.get("Retry-After") == "1", twin.headers
    answered = await first
    assert answered.status == 201 and answered.json["status"] == "succeeded", answered
    replay = await api.post("/v1/repayments", body, key=key)
    assert (replay.status, replay.headers.get("Idempotent-Replayed")) == (201, "true"), replay
    assert replay.raw == answered.raw
    await _check_prepaid_3000(settings, api, http, core_knobs, who, answered, since)
    assert await duplicate_requests(http, core_knobs) == duplicates  # nothing sent twice


async def test_ten_copies_at_once_debit_once(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    await set_knobs(http, core_knobs, latency_ms=200)  # the copies overlap the debit
    body = _prepay(who, "3000.00")
    replies = await asyncio.gather(*(api.post("/v1/repayments", body, key=key) for _ in range(10)))
    assert {r.status for r in replies} <= {201, 409}, replies
    assert all(r.json["code"] == "IDEMPOTENCY_IN_FLIGHT" for r in replies if r.status == 409)
    named = {r.json["repayment_id"] for r in replies if r.status == 201}
    assert len(named) == 1, replies
    final = await eventually(lambda: api.post("/v1/repayments", body, key=key),
                             lambda r: r.status == 201 and r.json["status"] != "processing")  # fmt: skip
    assert final.json["repayment_id"] in named
    await _check_prepaid_3000(settings, api, http, core_knobs, who, final, since)


async def test_redis_emptied_before_the_retry(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower, redis_client: aioredis.Redis,
) -> None:  # fmt: skip
    """The fast path forgets every key: the retry is answered from the durable record
    in the shard, and the key still refuses another request."""
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    first = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert first.status == 201 and first.json["status"] == "succeeded", first
    await redis_client.flushall()
    again = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert (again.status, again.json) == (201, first.json), again
    await redis_client.flushall()
    other = await api.post("/v1/repayments", _prepay(who, "100.00"), key=key)
    assert (other.status, other.json["code"]) == (422, "IDEMPOTENCY_KEY_REUSED"), other
    await _check_prepaid_3000(settings, api, http, core_knobs, who, first, since)


async def test_redis_emptied_while_processing_replays_not_in_progress(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower, redis_client: aioredis.Redis,
) -> None:  # fmt: skip
    """The retry of a repayment still `processing`, after Redis forgot the key, reads
    its loan held (by itself): the refusal phase A would answer from that read
    (REPAYMENT_IN_PROGRESS) must give way to the key's durable record, replayed; another
    key is refused while the loan is held, with nothing written."""
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    duplicates = await duplicate_requests(http, core_knobs)
    await set_knobs(http, core_knobs, latency_ms=2500)  # the inline wait is 1 s
    first = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert first.status == 201 and first.json["status"] == "processing", first
    await redis_client.flushall()
    again = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert (again.status, again.json) == (201, first.json), again
    other = await api.post("/v1/repayments", _prepay(who, "100.00"), key=key + "-other")
    assert (other.status, other.json["code"]) == (422, "REPAYMENT_IN_PROGRESS"), other
    assert await _repayment_ids(settings, who.customer_id) == [first.json["repayment_id"]]
    await set_knobs(http, core_knobs, latency_ms=5)
    final = await api.settled_repayment(first)
    await _check_prepaid_3000(settings, api, http, core_knobs, who, final, since)
    assert await duplicate_requests(http, core_knobs) == duplicates  # nothing sent twice


async def test_a_refusal_stores_nothing_and_frees_the_key(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    """A request its sizing refuses (answered from phase A's read, without a locked
    transaction) writes nothing and binds nothing: its key then books the corrected
    request, once."""
    who, since, key = ten_days_on, core_clock(), "once-" + secrets.token_hex(8)
    wrong = {"customer_id": who.customer_id, "debit_from": who.card,
             "items": [{"loan_id": who.loan_id, "mode": "payoff", "amount": "1.00"}]}  # fmt: skip
    for _ in range(2):  # the same answer again: nothing of the first was kept
        refused = await api.post("/v1/repayments", wrong, key=key)
        assert (refused.status, refused.json["code"]) == (422, "PAYOFF_AMOUNT_MISMATCH"), refused
    assert await _repayment_ids(settings, who.customer_id) == []
    async with shard_of(settings, who.customer_id) as conn:
        stored = "SELECT count(*) FROM idempotency_record WHERE idem_key = $1"
        assert await conn.fetchval(stored, key) == 0
    first = await api.post("/v1/repayments", _prepay(who, "3000.00"), key=key)
    assert first.status == 201 and first.json["status"] == "succeeded", first
    await _check_prepaid_3000(settings, api, http, core_knobs, who, first, since)


async def test_debit_refused_books_nothing_and_frees_the_loan(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    who, since = ten_days_on, core_clock()
    await set_knobs(http, core_knobs, fail_ratio=1)
    refused = await api.settled_repayment(await api.post("/v1/repayments", _prepay(who, "3000.00")))
    assert refused.status == 201 and refused.json["status"] == "failed", refused
    assert refused.json["failure_reason"] in ("INSUFFICIENT_FUNDS", "CARD_FROZEN"), refused
    debits = await debits_at_core(http, core_knobs, who.card, since)
    assert [(d["reference"], d["status"]) for d in debits] == [
        (f"R{refused.json['repayment_id']}", "failed")]  # fmt: skip
    async with shard_of(settings, who.customer_id) as conn:
        assert await postings_of(conn, "repayment", refused.json["repayment_id"]) == []
        books = await loan_books(conn, who.loan_id)
        assert (books.principal, books.interest_receivable) == (PRINCIPAL, 0)
        assert await conn.fetchval(
            "SELECT pending_repayment_id FROM loan WHERE loan_id = $1", int(who.loan_id)) is None  # fmt: skip
    _, rows = hand.equal_installment(PRINCIPAL, RATE, 12, who.start)
    schedule = (await api.get(f"/v1/loans/{who.loan_id}/schedule")).json
    assert schedule["plan_version"] == 1
    assert [hand.fen(i["principal"]) for i in schedule["installments"]] == [
        r.principal_fen for r in rows
    ]
    assert (await api.get(f"/v1/credit-lines/{who.line_id}")).json["used"] == "12000.00"
    # The loan is free again: the next repayment goes through, and is the only one booked.
    await set_knobs(http, core_knobs, fail_ratio=0)
    since = core_clock()
    paid = await api.settled_repayment(await api.post("/v1/repayments", _prepay(who, "3000.00")))
    assert paid.status == 201, paid
    assert sorted(await _repayment_ids(settings, who.customer_id)) == sorted(
        [refused.json["repayment_id"], paid.json["repayment_id"]])  # fmt: skip
    # _check_prepaid_3000 expects one repayment row: check the rest of it by hand here.
    principal, interest = hand.prepaid_principal(300_000, RATE, DAYS)
    debits = await debits_at_core(http, core_knobs, who.card, since)
    assert [(d["reference"], d["amount_fen"], d["status"]) for d in debits] == [
        (f"R{paid.json['repayment_id']}", principal + interest, "succeeded")]  # fmt: skip
    async with shard_of(settings, who.customer_id) as conn:
        assert await postings_of(conn, "repayment", paid.json["repayment_id"]) == [
            repayment_legs(principal + interest, {who.loan_id: (0, interest, principal)})]  # fmt: skip
        books = await loan_books(conn, who.loan_id)
        assert (books.principal, books.interest_receivable) == (PRINCIPAL - principal, -interest)


async def _inquiries_unavailable(http: aiohttp.ClientSession, core_url: str) -> float:
    async with http.get(f"{core_url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith('fake_core_requests_total{endpoint="inquiry",outcome="unavailable"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_inquiry_fails_until_core_answers(
    api: ApiClient, settings: Settings, http: aiohttp.ClientSession, core_knobs: str,
    ten_days_on: Borrower,
) -> None:  # fmt: skip
    """Core decides the debit and withholds the answer (a time-out), then refuses every
    inquiry for a while: the repayment stays `processing` while the relay asks again,
    and ends as core decided, the debit never sent twice."""
    who, since = ten_days_on, core_clock()
    duplicates = await duplicate_requests(http, core_knobs)
    unavailable = await _inquiries_unavailable(http, core_knobs)
    await set_knobs(http, core_knobs, timeout_ratio=1, timeout_hang_s=2, inquiry_fail_ratio=1)
    reply = await api.post("/v1/repayments", _prepay(who, "3000.00"))
    assert reply.status == 201 and reply.json["status"] == "processing", reply
    await set_knobs(http, core_knobs, timeout_ratio=0)
    # The relay asked at least twice and was refused each time; still processing.
    asked = await eventually(lambda: _inquiries_unavailable(http, core_knobs),
                             lambda n: n >= unavailable + 2, interval_s=0.1)  # fmt: skip
    assert asked >= unavailable + 2
    view = (await api.get(f"/v1/repayments/{reply.json['repayment_id']}")).json
    assert view["status"] == "processing", view
    await set_knobs(http, core_knobs, inquiry_fail_ratio=0)
    final = await api.settled_repayment(reply, timeout_s=60)
    [debit] = await debits_at_core(http, core_knobs, who.card, since)
    assert debit["reference"] == f"R{reply.json['repayment_id']}" and debit["timed_out"]
    assert final.json["status"] == debit["status"], (final.json, debit)  # as core decided
    principal, interest = hand.prepaid_principal(300_000, RATE, DAYS)
    async with shard_of(settings, who.customer_id) as conn:
        postings = await postings_of(conn, "repayment", reply.json["repayment_id"])
        books = await loan_books(conn, who.loan_id)
    schedule = (await api.get(f"/v1/loans/{who.loan_id}/schedule")).json
    if debit["status"] == "succeeded":
        want = hand.prepay_before_first_due(
            PRINCIPAL, RATE, 12, who.start, principal, "reduce_nearest"
        )
    else:
        want = hand.equal_installment(PRINCIPAL, RATE, 12, who.start)[1]
    assert [(i["due_date"], hand.fen(i["principal"]), hand.fen(i["interest"]))
            for i in schedule["installments"]] == [
        (r.due_date.isoformat(), r.principal_fen, r.interest_fen) for r in want]  # fmt: skip
    if debit["status"] == "succeeded":
        assert debit["amount_fen"] == principal + interest
        assert postings == [
            repayment_legs(principal + interest, {who.loan_id: (0, interest, principal)})
        ]
        assert (books.principal, books.interest_receivable) == (PRINCIPAL - principal, -interest)
    else:
        assert postings == [] and (books.principal, books.interest_receivable) == (PRINCIPAL, 0)
    assert await duplicate_requests(http, core_knobs) == duplicates  # inquired, never resent


# --- the engine SIGKILLed in a burst of repayments -------------------------------------------

LOANS_EACH = 4


@pytest.fixture
def own_engine(fakes: Fakes, engine: EngineProcess) -> Iterator[EngineProcess]:
    """An engine of this test's own on the suite's databases and fakes (the session's
    relay, from `engine`, completes what the killed one left `processing`)."""
    proc = EngineProcess(fakes, workers=2, relay=False)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def test_engine_killed_mid_burst_of_repayments(
    own_engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings, core_knobs: str
) -> None:
    api = ApiClient(http, own_engine.base_url)
    people = await asyncio.gather(*(_borrower(api, "1000.00") for _ in range(6)))
    loans: dict[str, list[str]] = {p.customer_id: [p.loan_id] for p in people}
    for p in people:
        for _ in range(LOANS_EACH - 1):
            loan = await api.disbursed_loan(p.line_id, "1000.00", disburse_to=p.card)
            loans[p.customer_id].append(loan["loan_id"])
    since = core_clock()
    # Each loan prepays 100.00 on its drawdown day (no interest), one request per loan.
    ops = [Op("/v1/repayments", _prepay(p, "100.00", loan_id)) for p in people
           for loan_id in loans[p.customer_id]]  # fmt: skip
    await set_knobs(http, core_knobs, latency_ms=150)  # debits in flight when it dies
    gate = asyncio.Semaphore(12)

    async def one(op: Op) -> None:
        async with gate:
            op.first = await send(api, op)

    load = asyncio.ensure_future(asyncio.gather(*(one(op) for op in ops)))

    def progress() -> tuple[int, int]:
        return sum(op.first is not None for op in ops), IN_FLIGHT[0]

    # The kill lands once the engine is answering and debits are under way (the first
    # answers are in) with requests still in flight: sent, and not answered.
    await eventually(lambda: asyncio.sleep(0, progress()), lambda p: p[0] >= 1 and p[1] >= 6,
                     timeout_s=60, interval_s=0.005)  # fmt: skip
    answered, in_flight = progress()
    await asyncio.to_thread(own_engine.kill)
    await load
    assert answered >= 1 and in_flight >= 6, "the kill must land while repayments are in flight"
    assert any(op.first is None for op in ops), "some requests must have been cut off"
    await set_knobs(http, core_knobs, latency_ms=5)
    own_engine.proc = own_engine._spawn()
    await asyncio.to_thread(own_engine.wait_ready)
    await retry_until_final(api, ops)
    # Each key: one repayment, succeeded, and a 201 is never contradicted by a retry.
    for op in ops:
        assert op.final is not None and op.final.status == 201, op.final
        assert op.final.json["status"] == "succeeded", op.final
        if op.first is not None and op.first.status == 201:
            assert op.first.json["repayment_id"] == op.final.json["repayment_id"]
    named = {op.final.json["repayment_id"] for op in ops if op.final is not None}
    assert len(named) == len(ops)
    expected_plan = hand.prepay_before_first_due(100_000, RATE, 12, people[0].start, 10_000,
                                                 "reduce_nearest")  # fmt: skip
    for p in people:
        mine = set(await _repayment_ids(settings, p.customer_id))
        assert mine <= named and len(mine) == LOANS_EACH  # no repayment no key names
        debits = await debits_at_core(http, core_knobs, p.card, since)
        assert sorted((d["reference"], d["amount_fen"], d["status"]) for d in debits) == sorted(
            (f"R{r}", 10_000, "succeeded") for r in mine)  # fmt: skip
        async with shard_of(settings, p.customer_id) as conn:
            for repayment_id in mine:
                [legs] = await postings_of(conn, "repayment", repayment_id)
                assert legs["core_settlement"] == 10_000 and len(legs) == 2, legs
            for loan_id in loans[p.customer_id]:
                books = await loan_books(conn, loan_id)
                assert (books.principal, books.interest_receivable) == (90_000, 0), loan_id
            used = await conn.fetchval(
                "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(p.line_id)
            )
            assert used == LOANS_EACH * 90_000
            assert (await trial_balance(conn, deep=True)).balanced
        if p.start == people[0].start:
            schedule = (await api.get(f"/v1/loans/{p.loan_id}/schedule")).json
            assert [hand.fen(i["principal"]) for i in schedule["installments"]] == [
                r.principal_fen for r in expected_plan]  # fmt: skip

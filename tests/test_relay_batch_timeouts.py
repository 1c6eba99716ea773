"""The relay against both ways a core can answer a batch in which one item times out:
`item` (a real core: the batch answers at once, that item `unavailable`) and `whole`
(the whole answer withheld until the caller's time-out). Either way every loan ends
paid exactly once or failed, core sees no payment twice, and the lines and the book
hold exactly the disbursed principal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from engine.settings import Settings
from tests.api_client import ApiClient, new_bank_card
from tests.conftest import EngineProcess
from tests.money_checks import unbalanced_shards
from tests.test_disbursement import _duplicates, _knobs, _records, _settle


@pytest.fixture
async def core_reset(engine: EngineProcess, http: aiohttp.ClientSession) -> AsyncIterator[None]:
    yield
    await _knobs(http, engine.fakes.core, latency_ms=5, fail_ratio=0, timeout_ratio=0,
                 batch_timeout_mode="item")  # fmt: skip


@pytest.mark.parametrize("mode", ["item", "whole"])
async def test_a_batch_with_a_timed_out_item_settles_every_loan_once(
    mode: str,
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
    core_reset: None,
) -> None:
    core = engine.fakes.core
    duplicates_before = await _duplicates(http, core)
    await _knobs(http, core, timeout_ratio=0.15, fail_ratio=0.1, timeout_hang_s=2,
                 batch_timeout_mode=mode)  # fmt: skip
    customers = [await api.customer() for _ in range(8)]
    lines = {c: await api.line(c, limit="100000.00") for c in customers}
    replies = await asyncio.gather(
        *(api.drawdown(lines[c], f"{500 + n}.00") for c in customers for n in range(6))
    )
    assert all(r.status == 201 for r in replies), replies[:3]
    statuses = await _settle(settings, customers)
    assert len(statuses) == 48 and set(statuses.values()) <= {"disbursed", "failed"}, statuses
    mine = {f"D{loan_id}" for loan_id in statuses}
    records = [r for r in await _records(http, core, "/fake/records") if r["reference"] in mine]
    # 0.15 of 48: none timed out has a chance of 0.85^48, 4 in 10,000
    assert any(r.get("timed_out") for r in records), "no item drew a time-out"
    paid = {r["reference"] for r in records if r["status"] == "succeeded"}
    for loan_id, status in statuses.items():
        assert (f"D{loan_id}" in paid) == (status == "disbursed"), (loan_id, status)
    assert await _duplicates(http, core) == duplicates_before  # nothing sent twice
    amounts = {r.json["loan_id"]: int(r.json["principal"].replace(".", "")) for r in replies}
    for line_id in lines.values():
        line = (await api.get(f"/v1/credit-lines/{line_id}")).json
        loans = [r.json["loan_id"] for r in replies if r.json["credit_line_id"] == line_id]
        expected = sum(amounts[i] for i in loans if statuses[int(i)] == "disbursed")
        assert int(line["used"].replace(".", "")) == expected
    assert await unbalanced_shards(settings) == []


@pytest.mark.parametrize("mode", ["item", "whole"])
async def test_debits_sharing_a_core_call_with_a_timed_out_one_settle_each_repayment_once(
    mode: str,
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
    core_reset: None,
) -> None:
    """Repayments at once: their inline debits share core calls (CoalescingCore), and
    one item of a call draws a time-out that outlasts the inline wait (1 s here). `item`: core
    answers the rest at once, so only the timed-out debits answer `processing`; `whole`:
    it withholds the call's answer, every debit of it answers `processing`. Either way
    the relay resolves each unclear debit by inquiry, never by a second debit, and each
    repayment ends as core booked it."""
    core = engine.fakes.core
    loans = []
    for _ in range(12):
        card = new_bank_card()
        customer = await api.customer(bank_card=card)
        line = await api.line(customer, limit="100000.00")
        loan = await api.disbursed_loan(line, "2000.00", disburse_to=card)
        loans.append((customer, card, loan["loan_id"]))
    duplicates_before = await _duplicates(http, core)
    await _knobs(http, core, timeout_ratio=0.2, fail_ratio=0.1, timeout_hang_s=4,
                 batch_timeout_mode=mode)  # fmt: skip
    replies = await asyncio.gather(*(
        api.post("/v1/repayments", {
            "customer_id": customer, "debit_from": card,
            "items": [{"loan_id": loan_id, "mode": "prepay", "amount": "100.00"}]})
        for customer, card, loan_id in loans))  # fmt: skip
    assert all(r.status == 201 for r in replies), replies[:3]
    at_once = {r.json["repayment_id"]: r.json["status"] for r in replies}
    final = {r.json["repayment_id"]: (await api.settled_repayment(r)).json["status"]
             for r in replies}  # fmt: skip
    assert set(final.values()) <= {"succeeded", "failed"}, final
    records = {r["reference"]: r for r in await _records(http, core, "/fake/records")}
    mine = {repayment_id: records[f"R{repayment_id}"] for repayment_id in final}
    assert any(r.get("timed_out") for r in mine.values()), "no debit drew a time-out"
    for repayment_id, status in final.items():
        assert (mine[repayment_id]["status"] == "succeeded") == (status == "succeeded")
    if mode == "item":  # core answered the rest of each call: only the timed-out wait
        for repayment_id, status in at_once.items():
            if status == "processing":
                assert mine[repayment_id].get("timed_out"), (repayment_id, mine[repayment_id])
    assert await _duplicates(http, core) == duplicates_before  # nothing sent twice
    for (_, _, loan_id), reply in zip(loans, replies, strict=True):
        viewed = (await api.get(f"/v1/loans/{loan_id}")).json
        paid = final[reply.json["repayment_id"]] == "succeeded"
        assert Decimal(viewed["outstanding_principal"]) == Decimal("1900.00" if paid else "2000.00")
    assert await unbalanced_shards(settings) == []

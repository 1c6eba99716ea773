"""The relay against both ways a core can answer a batch in which one item times out:
`item` (a real core: the batch answers at once, that item `unavailable`) and `whole`
(the whole answer withheld until the caller's time-out). Either way every loan ends
paid exactly once or failed, core sees no payment twice, and the lines and the book
hold exactly the disbursed principal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from engine.settings import Settings
from ledger.store import trial_balance
from tests.api_client import ApiClient
from tests.conftest import EngineProcess
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
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            assert (await trial_balance(conn, deep=True)).balanced
        finally:
            await conn.close()

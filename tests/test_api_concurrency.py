"""Races over real HTTP: a line is never overdrawn, a key moves money once, the
consumer cap holds across lines."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import redis.asyncio as aioredis

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient


async def _loan_count(settings: Settings, customer_id: str) -> int:
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM loan WHERE customer_id = $1", int(customer_id)
            )
        )
    finally:
        await conn.close()


async def test_hundred_drawdowns_race_for_one_line(api: ApiClient) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id, limit="10000.00")
    replies = await asyncio.gather(*(api.drawdown(line_id, "300.00") for _ in range(100)))
    statuses = sorted(r.status for r in replies)
    ok = [r for r in replies if r.status == 201]
    assert len(ok) == 33, statuses  # 33 x 300.00 = 9900.00 fits; a 34th would not
    assert {r.json["code"] for r in replies if r.status != 201} == {"CREDIT_LINE_EXCEEDED"}
    line = (await api.get(f"/v1/credit-lines/{line_id}")).json
    assert line["used"] == "9900.00"
    assert line["available"] == "100.00"


async def test_one_key_ten_times_at_once_is_one_loan(api: ApiClient, settings: Settings) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    key = secrets.token_hex(8)
    body = {"credit_line_id": line_id, "amount": "2000.00", "term_months": 6,
            "repayment_method": "equal_installment", "disburse_to": api.card_of(customer_id)}  # fmt: skip
    replies = await asyncio.gather(*(api.post("/v1/drawdowns", body, key=key) for _ in range(10)))
    created = [r for r in replies if r.status == 201]
    assert {r.status for r in replies} <= {201, 409}, replies
    assert len({r.json["loan_id"] for r in created}) == 1
    assert all(r.json["code"] == "IDEMPOTENCY_IN_FLIGHT" for r in replies if r.status == 409)
    assert await _loan_count(settings, customer_id) == 1
    replay = await api.post("/v1/drawdowns", body, key=key)
    assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.raw == created[0].raw
    other = await api.post("/v1/drawdowns", body | {"amount": "2001.00"}, key=key)
    assert (other.status, other.json["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "2000.00"


async def test_redis_flushall_between_drawdown_and_retry(
    api: ApiClient, settings: Settings, redis_client: aioredis.Redis
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    key = secrets.token_hex(8)
    first = await api.drawdown(line_id, "1500.00", key=key)
    assert first.status == 201
    await redis_client.flushall()
    retry = await api.drawdown(line_id, "1500.00", key=key)
    assert retry.status == 201, retry
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json == first.json
    assert await _loan_count(settings, customer_id) == 1


async def test_consumer_cap_holds_across_lines(api: ApiClient) -> None:
    customer_id = await api.customer()
    methods = ["equal_installment"]
    lines = [
        await api.line(
            customer_id,
            product_code="demo-consumer",
            limit="150000.00",
            repayment_methods=methods,
            max_term_months=12,
        )
        for _ in range(3)
    ]
    replies = await asyncio.gather(
        *(api.drawdown(line, "30000.00", term_months=12) for line in lines for _ in range(4))
    )
    ok = [r for r in replies if r.status == 201]
    assert len(ok) == 6  # 6 x 30000.00 = 180000.00; a 7th would pass 200000.00
    assert {r.json["code"] for r in replies if r.status != 201} == {"CUSTOMER_CAP_EXCEEDED"}
    loans = (await api.get(f"/v1/customers/{customer_id}/loans")).json["loans"]
    outstanding = sum(int(loan["outstanding_principal"].replace(".", "")) for loan in loans)
    assert outstanding == 18_000_000
    # The remaining 20000.00 still fits.
    assert (await api.drawdown(lines[0], "20000.00", term_months=12)).status == 201
    assert (await api.drawdown(lines[1], "0.01", term_months=12)).json[
        "code"
    ] == "CUSTOMER_CAP_EXCEEDED"

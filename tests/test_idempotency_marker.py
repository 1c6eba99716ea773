"""Issue 21, item 5: a key reused for another request, refused, must not leave its
in-flight marker in Redis — else the genuine retry of a `processing` repayment is told
IDEMPOTENCY_KEY_REUSED for the marker's 15 s."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient
from tests.conftest import EngineProcess


async def _knobs(http: aiohttp.ClientSession, engine: EngineProcess, **knobs: Any) -> None:
    async with http.post(f"{engine.fakes.core.base_url}/fake/knobs", json=knobs) as resp:
        assert resp.status == 200, await resp.text()


@pytest.fixture
async def healthy_core(engine: EngineProcess, http: aiohttp.ClientSession) -> AsyncIterator[None]:
    yield
    await _knobs(http, engine, latency_ms=5)


async def _repayments(settings: Settings, customer_id: str) -> int:
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM repayment WHERE customer_id = $1", int(customer_id)
        )
        return int(count)
    finally:
        await conn.close()


async def test_refused_key_reuse_releases_its_marker(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    healthy_core: None,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    loan = await api.disbursed_loan(line_id, "3000.00")
    await _knobs(http, engine, latency_ms=1500)  # above the suite's 1 s inline wait
    key = f"repay-{secrets.token_hex(6)}"
    card = api.card_of(customer_id)
    genuine = {
        "customer_id": customer_id,
        "debit_from": card,
        "items": [{"loan_id": loan["loan_id"], "mode": "payoff"}],
    }
    first = await api.post("/v1/repayments", genuine, key=key)
    assert first.status == 201 and first.json["status"] == "processing", first

    other = genuine | {"items": [{"loan_id": loan["loan_id"], "mode": "prepay",
                                  "amount": "100.00"}]}  # fmt: skip
    reused = await api.post("/v1/repayments", other, key=key)
    assert (reused.status, reused.json["code"]) == (422, "IDEMPOTENCY_KEY_REUSED"), reused
    # The refused request's marker is gone at once, not after its 15 s TTL.
    assert await redis_client.get(f"idem:{api.channel}:{key}") is None

    retry = await api.post("/v1/repayments", genuine, key=key)
    assert retry.status == 201, retry
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json["repayment_id"] == first.json["repayment_id"]
    # Nothing moved twice: one repayment of this customer.
    assert await _repayments(settings, customer_id) == 1

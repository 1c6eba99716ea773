"""Redis killed under a live engine: drawdowns go on, retries replay from the shard's
durable record, concurrent copies of one key (drawdowns, and repayments) still move
money once, `/readyz` says Redis is down — and when Redis is back the engine uses it
again without a restart."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from engine.stores import redis_wire
from tests.api_client import ApiClient
from tests.conftest import EngineProcess, Fakes, OwnRedis


@pytest.fixture
def engine_on_own_redis(fakes: Fakes, own_redis: OwnRedis) -> Iterator[EngineProcess]:
    proc = EngineProcess(
        fakes,
        workers=1,
        extra_env={"ENGINE_REDIS_URL": f"redis://:s3cret@127.0.0.1:{own_redis.port}/0"},
        relay=True,  # pays the drawdowns out (nothing of it rests on Redis)
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _redis_state(base_url: str) -> str:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    return next(c["state"] for c in body["components"] if c["name"] == "redis")


async def test_redis_killed_and_back(
    engine_on_own_redis: EngineProcess, own_redis: OwnRedis, http: aiohttp.ClientSession
) -> None:
    api = ApiClient(http, engine_on_own_redis.base_url)
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    card = api.card_of(customer_id)
    before = secrets.token_hex(8)
    first = await api.drawdown(line_id, "1000.00", key=before, disburse_to=card)
    assert first.status == 201, first

    own_redis.kill()
    retry = await api.drawdown(line_id, "1000.00", key=before, disburse_to=card)
    assert retry.status == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json == first.json

    during = secrets.token_hex(8)
    copies = await asyncio.gather(
        *(api.drawdown(line_id, "2000.00", key=during, disburse_to=card) for _ in range(8))
    )
    assert [c.status for c in copies] == [201] * 8, [c.json for c in copies]
    assert len({c.json["loan_id"] for c in copies}) == 1
    assert _redis_state(engine_on_own_redis.ops_url) == "down"
    loans = (await api.get(f"/v1/customers/{customer_id}/loans")).json["loans"]
    assert len(loans) == 2
    assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "3000.00"

    # A repayment's twins, Redis still down: the first takes the key in the shard's
    # durable record; each other copy replays its answer or is told to retry (409), and
    # the loan is paid down once.
    await api.wait_for_loan(first.json["loan_id"])
    item = {"loan_id": first.json["loan_id"], "mode": "prepay", "amount": "100.00"}
    repay = {"customer_id": customer_id, "debit_from": card, "items": [item]}
    twin_key = secrets.token_hex(8)
    twins = await asyncio.gather(
        *(api.post("/v1/repayments", repay, key=twin_key) for _ in range(8))
    )
    assert {t.status for t in twins} <= {201, 409}, [t.json for t in twins]
    assert all(t.json["code"] == "IDEMPOTENCY_IN_FLIGHT" for t in twins if t.status == 409)
    ids = {t.json["repayment_id"] for t in twins if t.status == 201}
    assert len(ids) == 1, [t.json for t in twins]
    final = await api.settled_repayment(await api.post("/v1/repayments", repay, key=twin_key))
    assert final.status == 201 and final.json["repayment_id"] in ids, final
    assert final.json["status"] == "succeeded", final
    loan = (await api.get(f"/v1/loans/{first.json['loan_id']}")).json
    assert loan["outstanding_principal"] == "900.00", loan  # paid down once, not eight times

    own_redis.start()  # same port, empty
    deadline = time.monotonic() + 10 * redis_wire.RECONNECT_PAUSE_S + 5
    while _redis_state(engine_on_own_redis.ops_url) != "up":
        assert time.monotonic() < deadline, "the engine did not reconnect to Redis"
        await asyncio.sleep(0.1)
    after = secrets.token_hex(8)
    assert (await api.drawdown(line_id, "500.00", key=after, disburse_to=card)).status == 201
    check = aioredis.Redis(port=own_redis.port, password="s3cret")
    try:
        cached = await check.get(f"idem:{api.channel}:{after}")
    finally:
        await check.aclose()
    assert cached is not None and cached[:1] == b"D"  # the answer is cached again

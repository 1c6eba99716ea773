"""Issue 21, item 9: requests are limited per channel (a Lua script in Redis, so the
limit holds across the engine's prefork workers), with a clear 429 and Retry-After;
a refused money request moves nothing. Redis down: each process keeps its share."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.security.pii import dev_cipher
from engine.settings import Settings
from engine.stores.channel_gate import ChannelGate
from engine.stores.control_admin import add_channel, set_rate_limit
from engine.stores.redis_wire import RedisWire
from engine.stores.reference import Channel
from sharding.ids import shard_of_id
from tests.api_client import ApiClient
from tests.conftest import free_port

SECRET = "throttled-secret-" + secrets.token_hex(8)


@pytest.fixture
async def throttled(control_conn: asyncpg.Connection, api: ApiClient) -> AsyncIterator[ApiClient]:
    """A channel of tenant demo allowed 2 requests a second (a burst of 2)."""
    channel_id = "slow-" + secrets.token_hex(4)
    await add_channel(control_conn, dev_cipher(), channel_id, "demo", SECRET)
    await set_rate_limit(control_conn, channel_id, 2.0)
    await asyncio.sleep(0.6)
    yield ApiClient(api.session, api.base_url, channel_id, SECRET)
    await control_conn.execute(
        "UPDATE channel SET status = 'disabled', status_reason = 'test' WHERE channel_id = $1",
        channel_id,
    )


async def test_over_the_limit_is_429_with_retry_after_and_moves_nothing(
    api: ApiClient, throttled: ApiClient, settings: Settings
) -> None:
    customer_id = await api.customer()  # made by the demo channel: same tenant
    line_id = await api.line(customer_id)
    card = api.card_of(customer_id)
    replies = await asyncio.gather(
        *(throttled.drawdown(line_id, "100.00", disburse_to=card) for _ in range(12))
    )
    booked = [r for r in replies if r.status == 201]
    limited = [r for r in replies if r.status == 429]
    assert len(booked) + len(limited) == 12, replies
    # A burst of 2 and 2 a second, over both workers of the engine: never all twelve.
    assert 1 <= len(booked) <= 4, [r.status for r in replies]
    for reply in limited:
        assert reply.json["code"] == "RATE_LIMITED"
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert int(reply.headers["Retry-After"]) >= 1
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        loans = await conn.fetchval(
            "SELECT count(*) FROM loan WHERE customer_id = $1", int(customer_id)
        )
        used = await conn.fetchval(
            "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(line_id)
        )
    finally:
        await conn.close()
    assert (loans, used) == (len(booked), 100_00 * len(booked))
    # the demo channel, its own budget, is not held up by the other one's
    assert (await api.get(f"/v1/credit-lines/{line_id}")).status == 200
    await asyncio.sleep(1.1)
    assert (await throttled.get(f"/v1/credit-lines/{line_id}")).status == 200


async def test_redis_down_keeps_a_per_process_share() -> None:
    """No Redis: each of 4 workers allows a quarter of the channel's rate."""
    redis = RedisWire(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    gate = ChannelGate(redis, default_per_s=8.0, burst_s=1.0, workers=4)
    channel = Channel("c", "demo", "s", True)
    answers = [await gate.admit(channel, f"nonce-{n:012d}") for n in range(5)]
    assert [a.retry_after_s == 0 for a in answers] == [True, True, False, False, False]
    assert all(a.nonce_fresh is None for a in answers)  # not checked: the shard does it
    await redis.aclose()

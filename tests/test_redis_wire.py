"""The request path's Redis client against real Redis servers: answers in order under
concurrency, errors that say what happened, bounded waits when Redis is silent, and
recovery when a Redis that was killed comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.settings import Settings
from engine.stores import redis_wire
from engine.stores.redis_wire import RedisWire
from tests.conftest import OwnRedis
from tests.waiting import eventually


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RedisWire]:
    wire = RedisWire(settings.redis.url, timeout_s=2.0)
    yield wire
    await wire.aclose()


async def test_commands_and_nx(client: RedisWire, redis_client: aioredis.Redis) -> None:
    key = f"wire-test:{time.time_ns()}"
    await client.ping()  # raises unless PONG
    assert await client.set(key, b"one", ex=60, nx=True) is True
    assert await client.set(key, b"two", ex=60, nx=True) is False
    assert await client.get(key) == b"one"
    assert 0 < await redis_client.ttl(key) <= 60  # seen by another client: really stored
    assert await client.set(key, b"three", ex=60) is True
    assert await client.get(key) == b"three"
    assert await client.delete(key) == 1
    assert await client.get(key) is None


async def test_concurrent_callers_each_get_their_own_reply(client: RedisWire) -> None:
    run = time.time_ns()

    async def one(n: int) -> bytes | None:
        await client.set(f"wire-test:{run}:{n}", str(n).encode(), ex=60)
        return await client.get(f"wire-test:{run}:{n}")

    replies = await asyncio.gather(*(one(n) for n in range(500)))
    assert replies == [str(n).encode() for n in range(500)]


async def test_error_reply_raises_and_the_connection_goes_on(client: RedisWire) -> None:
    key = f"wire-test:{time.time_ns()}"
    await client.set(key, b"not a number", ex=60)
    with pytest.raises(ResponseError, match="not an integer"):
        await client.execute("INCR", key)
    assert await client.get(key) == b"not a number"


async def test_a_caller_that_gives_up_does_not_shift_the_replies(client: RedisWire) -> None:
    key = f"wire-test:{time.time_ns()}"
    await client.set(key, b"mine", ex=60)
    # BLPOP holds the connection for 0.3 s; its caller gives up after 0.05 s.
    blocked = asyncio.ensure_future(client.execute("BLPOP", f"{key}:empty", "0.3"))
    behind = asyncio.ensure_future(client.get(key))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(blocked, 0.05)
    assert await behind == b"mine"
    assert await client.get(key) == b"mine"


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers: a Redis that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_silent_redis_fails_every_waiting_call_in_bounded_time(
    silent_server: int,
) -> None:
    wire = RedisWire(f"redis://127.0.0.1:{silent_server}/0", timeout_s=0.2)
    started = time.monotonic()
    outcomes = await asyncio.gather(*(wire.get(f"k{n}") for n in range(20)), return_exceptions=True)
    took = time.monotonic() - started
    assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
    # timeout plus at most one watchdog tick, with slack for a busy machine
    assert 0.2 <= took < 0.2 * (1 + 1 / redis_wire.WATCHDOG_TICKS_PER_TIMEOUT) + 0.5
    await wire.aclose()


async def test_calls_beyond_pending_max_fail_at_once(silent_server: int) -> None:
    wire = RedisWire(f"redis://127.0.0.1:{silent_server}/0", timeout_s=1.0, pending_max=2)
    waiting = [asyncio.ensure_future(wire.get(f"k{n}")) for n in range(2)]
    # Until both are sent and waiting for their answers.
    pending = await eventually(lambda: asyncio.sleep(0, wire._wire.pending if wire._wire else 0),
                               lambda n: n == 2, timeout_s=10, interval_s=0.005)  # fmt: skip
    assert pending == 2
    with pytest.raises(RedisConnectionError, match="more than 2"):
        await wire.get("k3")
    await wire.aclose()
    for task in waiting:
        with pytest.raises(RedisConnectionError):
            await task


async def test_killed_redis_fails_fast_and_is_used_again_once_back(
    own_redis: OwnRedis,
) -> None:
    wire = RedisWire(f"redis://:s3cret@127.0.0.1:{own_redis.port}/2", timeout_s=0.5)
    assert await wire.set("k", b"before", ex=60) is True
    # AUTH and SELECT 2 came from the URL: the key is in database 2 only.
    check = aioredis.Redis(port=own_redis.port, password="s3cret", db=2)
    assert await check.get("k") == b"before"
    await check.aclose()

    own_redis.kill()
    # Until the client has seen the connection go.
    lost = await eventually(lambda: asyncio.sleep(0, wire._wire and wire._wire.lost),
                            lambda x: x is not None, timeout_s=10, interval_s=0.005)  # fmt: skip
    assert lost is not None
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await wire.get("k")
    with pytest.raises(RedisConnectionError, match="unreachable"):  # paused: no new attempt
        await wire.get("k")
    assert time.monotonic() - started < 0.5

    own_redis.start()  # same port, empty: nothing was saved
    await asyncio.sleep(redis_wire.RECONNECT_PAUSE_S)
    assert await wire.get("k") is None
    assert await wire.set("k", b"after", ex=60) is True
    assert await wire.get("k") == b"after"
    await wire.aclose()
    with pytest.raises(RedisConnectionError, match="closed"):
        await wire.get("k")


def test_only_plain_redis_urls() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisWire("rediss://example:6379/0", timeout_s=1.0)
    with pytest.raises(ValueError, match="timeout_s"):
        RedisWire("redis://127.0.0.1:6379/0", timeout_s=0)

"""Start-up and clean-up of every long-lived resource, as aiohttp cleanup contexts.

Order: control pool -> ID worker lease -> shard pools -> Redis. Each is
closed in reverse order, and only if it started (aiohttp's cleanup_ctx rule).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web

from engine import app_keys
from sharding.ids import IdGenerator
from sharding.pools import PoolLimits, ShardPools, create_pool
from sharding.worker_lease import WorkerLease

CONTROL_POOL_LIMITS = PoolLimits(size_min=1, size_max=5)


def application_name() -> str:
    return f"engine:{os.getpid()}"


async def control_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[app_keys.SETTINGS]
    pool = await create_pool(settings.control_dsn, CONTROL_POOL_LIMITS, application_name())
    app[app_keys.CONTROL_POOL] = pool
    yield
    await pool.close()


async def id_lease_ctx(app: web.Application) -> AsyncIterator[None]:
    lease = WorkerLease(app[app_keys.CONTROL_POOL])
    await lease.acquire()
    app[app_keys.IDS] = IdGenerator(lease.worker, lease.valid)
    yield
    await lease.release()


async def shard_pools_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[app_keys.SETTINGS]
    pools = ShardPools(settings.shard_map(), settings.pool, application_name())
    app[app_keys.SHARD_POOLS] = pools
    await pools.open()
    yield
    await pools.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[app_keys.SETTINGS].redis
    client = aioredis.Redis.from_url(
        settings.url,
        max_connections=settings.connections_max,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry_on_timeout=False,
        decode_responses=False,
    )
    app[app_keys.REDIS] = client
    yield
    await client.aclose()

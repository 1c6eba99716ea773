"""Running work on a customer's shard: bounded waits, clear failure, safe retries.

Connection failures become `ShardUnavailableError` (503 SHARD_UNAVAILABLE, only
for that shard's customers). Serialization failures and deadlocks are retried
at most `RETRIES_MAX` times, the whole transaction each time; nothing else is
retried here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import asyncpg

from engine.runtime import metrics
from sharding.pools import ShardBusyError, ShardPools, ShardUnavailableError, checkout, returned

T = TypeVar("T")

RETRIES_MAX = 3
# A server going away answers in several ways: a refused or dropped socket, or, from a
# backend that is still there for a moment, a FATAL of class 57 (a postmaster killed
# while a connection was being opened sends 57P01 to it).
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


class RetryTransaction(Exception):
    """Raised by a transaction's work when what it read under its locks changed anyway
    (a race the locks cannot exclude): `in_transaction` runs the work again, bounded."""


_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, RetryTransaction)


@asynccontextmanager
async def shard_connection(
    pools: ShardPools, logical_shard: int
) -> AsyncIterator[asyncpg.Connection]:
    shard = pools.physical_for(logical_shard)
    pool = pools.pool(shard.name)
    try:
        conn = await pool.acquire(timeout=pools.limits.acquire_timeout_s)
    except TimeoutError as exc:  # the pool is exhausted, or connecting hangs
        raise ShardBusyError(shard.name, exc) from exc
    except (*_UNAVAILABLE, asyncpg.PostgresConnectionError) as exc:
        raise ShardUnavailableError(shard.name, exc) from exc
    try:
        async with returned(pool, conn):
            yield conn  # type: ignore[misc]  # a pool proxy behaves as a Connection
    except (*_UNAVAILABLE, asyncpg.PostgresConnectionError) as exc:
        raise ShardUnavailableError(shard.name, exc) from exc


async def in_transaction(
    pools: ShardPools,
    logical_shard: int,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
) -> T:
    """Run `work` in one shard transaction (READ COMMITTED), retrying only what is safe."""
    shard = pools.physical_for(logical_shard).name
    for attempt in range(RETRIES_MAX + 1):
        started = time.perf_counter()
        try:
            async with shard_connection(pools, logical_shard) as conn, conn.transaction():
                return await work(conn)
        except _RETRYABLE:
            if attempt == RETRIES_MAX:
                raise
            await asyncio.sleep(0.005 * (attempt + 1))
        finally:
            metrics.SHARD_QUERY.labels(shard).observe(time.perf_counter() - started)
    raise AssertionError("unreachable")


async def read(
    pools: ShardPools,
    logical_shard: int,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
) -> T:
    started = time.perf_counter()
    try:
        async with shard_connection(pools, logical_shard) as conn:
            return await work(conn)
    finally:
        metrics.SHARD_QUERY.labels(pools.physical_for(logical_shard).name).observe(
            time.perf_counter() - started
        )


def acquire(
    pool: asyncpg.Pool, timeout_s: float = 5.0
) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A pool connection, bounded wait; closed rather than reused if interrupted."""
    return checkout(pool, timeout_s)

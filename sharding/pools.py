"""One bounded asyncpg pool per physical shard.

Pools are made lazily connecting (`min_size=0` at creation, then warmed), so a
shard that is down at start-up does not stop the process: its customers get a
fast, clear error and every other shard goes on (guarantee 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

import asyncpg
import msgspec

from sharding.shard_map import PhysicalShard, ShardMap

log = logging.getLogger(__name__)

# Called on each new connection of a pool (asyncpg's `init`).
ConnectionInit = Callable[[asyncpg.Connection], Coroutine[Any, Any, None]]


class PoolLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits of every shard pool; every wait is bounded."""

    size_min: int = 2
    size_max: int = 20
    connect_timeout_s: float = 2.0
    acquire_timeout_s: float = 5.0
    command_timeout_s: float = 10.0
    statement_cache_size: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.size_min <= self.size_max <= 500:
            raise ValueError(f"pool sizes must satisfy 0 <= min <= max <= 500, got {self}")
        if min(self.connect_timeout_s, self.acquire_timeout_s, self.command_timeout_s) <= 0:
            raise ValueError("pool time-outs must be positive")


class ShardUnavailableError(RuntimeError):
    """A physical shard cannot be reached right now."""

    def __init__(self, shard: str, cause: BaseException | None = None) -> None:
        super().__init__(f"shard {shard} is unavailable")
        self.shard = shard
        self.cause = cause


class ShardBusyError(ShardUnavailableError):
    """Every connection of the shard's pool stayed busy for the whole acquire time-out."""


async def create_pool(
    dsn: str,
    limits: PoolLimits,
    application_name: str,
    server_settings: Mapping[str, str] | None = None,
    init: ConnectionInit | None = None,
) -> asyncpg.Pool:
    pool = asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=limits.size_max,
        timeout=limits.connect_timeout_s,
        command_timeout=limits.command_timeout_s,
        statement_cache_size=limits.statement_cache_size,
        max_inactive_connection_lifetime=300.0,
        # Business dates are Asia/Shanghai; timestamps are stored as timestamptz. As a
        # start-up parameter the zone is the session's default for the connection's life.
        server_settings={"application_name": application_name, "timezone": "Asia/Shanghai"}
        | dict(server_settings or {}),
        reset=_keep_session,
        init=init,
    )
    await pool
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, made a no-op: asyncpg's default (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL) was a round trip and four statements on every
    release, 40 % of all statements under load. Nothing here changes session
    state: settings are start-up parameters, locks are transaction-scoped, nobody
    listens. Before calling this the pool still waits out a pending cancellation
    and rolls back an open transaction; `checkout` closes instead of releasing a
    connection whose query was interrupted."""


# Exceptions that can leave a connection mid-protocol: such a connection is closed,
# never handed to the next caller. A server error (PostgresError) or a business
# refusal leaves it clean — its transaction is rolled back and it is released.
_INTERRUPTED = (asyncio.CancelledError, TimeoutError, OSError, asyncpg.InterfaceError)


@contextlib.asynccontextmanager
async def returned(pool: asyncpg.Pool, conn: Any) -> AsyncIterator[None]:
    """Give `conn` back to `pool` when the block ends, or close it if the block was
    interrupted mid-query."""
    try:
        yield
    except _INTERRUPTED:
        conn.terminate()
        raise
    finally:
        # Pool.release shields itself: a cancellation here cannot stop the return.
        await pool.release(conn)


@contextlib.asynccontextmanager
async def checkout(pool: asyncpg.Pool, timeout_s: float) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection (typed as a Connection: the proxy behaves as one), bounded wait."""
    conn = await pool.acquire(timeout=timeout_s)
    async with returned(pool, conn):
        yield conn  # type: ignore[misc]  # a pool proxy behaves as a Connection


class ShardPools:
    """Owns the pools; `for_logical(n)` is the routing entry point."""

    def __init__(
        self,
        shard_map: ShardMap,
        limits: PoolLimits,
        application_name: str,
        server_settings: Mapping[str, str] | None = None,
        init: ConnectionInit | None = None,
    ) -> None:
        self.shard_map = shard_map
        self.limits = limits
        self._application_name = application_name
        self._server_settings = dict(server_settings or {})
        self._init = init
        self._pools: dict[str, asyncpg.Pool] = {}

    async def open(self) -> None:
        for shard in self.shard_map.physical:
            self._pools[shard.name] = await create_pool(
                shard.dsn,
                self.limits,
                self._application_name,
                self._server_settings,
                self._init,
            )
        await asyncio.gather(*(self._warm(name) for name in self._pools))

    async def _warm(self, name: str) -> None:
        pool = self._pools[name]
        conns: list[Any] = []
        try:
            for _ in range(self.limits.size_min):
                conns.append(await pool.acquire(timeout=self.limits.connect_timeout_s))
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning(
                "shard not reachable at start-up", extra={"shard": name, "error": repr(exc)}
            )
        finally:
            for conn in conns:
                await pool.release(conn)

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), timeout=10)

    @property
    def by_name(self) -> Mapping[str, asyncpg.Pool]:
        return self._pools

    def physical_for(self, logical_shard: int) -> PhysicalShard:
        return self.shard_map.physical_for(logical_shard)

    def for_logical(self, logical_shard: int) -> asyncpg.Pool:
        return self._pools[self.shard_map.physical_for(logical_shard).name]

    def pool(self, name: str) -> asyncpg.Pool:
        return self._pools[name]

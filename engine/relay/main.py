"""The relay process: everything the relay needs, started and stopped in order.

    settings ─► control pool ─► ID worker lease ─► reference data ─► shard pools
             ─► HTTP client (core, SMS) ─► Relay.run until SIGTERM/SIGINT
    beside it: the books and shard watchers, and the sweep of old durable nonces

On a signal it stops claiming, lets calls in flight finish (each bounded by its
time-out), then releases everything; rows it held come back after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import asyncpg

from engine.adapters.bureau import BureauClient
from engine.adapters.core_bank import CoreBankClient
from engine.adapters.sms import SmsClient
from engine.origination.bureau_step import run_bureau_step
from engine.origination.setup import build_origination
from engine.relay.executor import Relay
from engine.runtime import gc_tuning, metrics
from engine.runtime.metrics_site import start_metrics_site
from engine.runtime.priority import lower_backend
from engine.services.booking_batch import DrawdownBatches
from engine.services.context import Services
from engine.settings import Settings
from engine.stores.control_plane import ControlPlane, control_plane
from engine.stores.nonce_sweep import sweep_forever
from engine.stores.outbox import LANE_SETTING, LANES, Claimed
from engine.stores.redis_wire import RedisWire
from engine.stores.watch import watch_books, watch_shards
from sharding.pools import ShardPools

log = logging.getLogger("engine.relay")


# `python -m engine relay --lane`: which outbox rows it claims (ledger 0025).
LANE_CHOICES: Final = {"all": LANES, "online": ("online",), "batch": ("batch",)}


def relay_pools(settings: Settings, lane: str = "all") -> ShardPools:
    """The relay's pools (not opened yet): their backends at `external.relay_backend_nice`;
    a batch relay's rows (its completions' SMS) are written in the batch lane too."""
    nice = settings.external.relay_backend_nice
    lane_setting = {LANE_SETTING: "batch"} if lane == "batch" else {}

    async def lowered(conn: asyncpg.Connection) -> None:
        await lower_backend(conn, nice)

    # The relay's statements are fixed batch shapes (arrays of IDs): planned once per
    # session, not again on every call as PostgreSQL's custom plans for `= ANY($1)` were.
    # Named by lane in pg_stat_activity (relay:online, relay:batch, relay:all).
    return ShardPools(
        settings.shard_map(),
        settings.pool,
        f"relay:{lane}",
        server_settings={"plan_cache_mode": "force_generic_plan"} | lane_setting,
        init=lowered if nice else None,
    )


@contextlib.asynccontextmanager
async def relay_resources(settings: Settings, lane: str = "all") -> AsyncIterator[Relay]:
    pools = relay_pools(settings, lane)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
    try:
        async with control_plane(settings, "relay") as plane:
            await pools.open()
            yield _relay(settings, plane, pools, session, LANE_CHOICES[lane])
    finally:
        await session.close()
        await pools.close()


def _relay(
    settings: Settings,
    plane: ControlPlane,
    pools: ShardPools,
    session: aiohttp.ClientSession,
    lanes: tuple[str, ...],
) -> Relay:
    external = settings.external
    relay = Relay(
        pools=pools,
        ids=plane.ids,
        cipher=plane.cipher,
        reference=plane.reference,
        core=CoreBankClient(
            session, external.core_url, external.core_timeout_s, metrics.observe_core_call
        ),
        sms=SmsClient(session, external.sms_url, external.sms_timeout_s),
        settings=external,
        lanes=lanes,
    )
    # The bureau step of applications decides with the same services as the API;
    # the Redis client is there for the type only: the relay never touches Redis.
    svc = Services(
        pools,
        plane.ids,
        plane.cipher,
        plane.reference,
        RedisWire(settings.redis.url, timeout_s=settings.redis.timeout_s),
        DrawdownBatches(pools),
    )
    origination = build_origination(settings.origination)
    bureau = BureauClient(
        session, settings.origination.bureau_url, settings.origination.bureau_timeout_s
    )

    async def bureau_step(shard: str, row: Claimed) -> bool:
        return await run_bureau_step(svc, origination, bureau, shard, row)

    relay.handlers["bureau"] = bureau_step
    return relay


async def run_relay(settings: Settings, lane: str = "all") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = await start_metrics_site(settings.external.relay_metrics_port)
    try:
        async with relay_resources(settings, lane) as relay:
            # The watchers once, in the relay that carries the online rows.
            watchers = [] if lane == "batch" else _watchers(settings, relay.pools)
            gc_tuning.settle_after_startup()
            log.info("relay running", extra={"shards": len(settings.shards), "lane": lane})
            await relay.run(stop)
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
    finally:
        await runner.cleanup()
    log.info("relay stopped")


def _watchers(settings: Settings, pools: ShardPools) -> list[asyncio.Task[None]]:
    security = settings.security
    sweep = sweep_forever(
        pools,
        retention_s=security.nonce_retention_s,
        interval_s=security.nonce_sweep_s,
        batch=security.nonce_sweep_batch,
    )
    return [
        asyncio.create_task(watch_books(pools), name="book-watch"),
        asyncio.create_task(watch_shards(pools), name="shard-watch"),
        asyncio.create_task(sweep, name="nonce-sweep"),
    ]

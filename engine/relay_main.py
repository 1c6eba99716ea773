"""The relay process: everything the relay needs, started and stopped in order.

    settings ─► control pool ─► ID worker lease ─► reference data ─► shard pools
             ─► HTTP client (core, SMS) ─► Relay.run until SIGTERM/SIGINT

On a signal it stops claiming, lets calls in flight finish (each bounded by its
time-out), then releases everything; rows it held come back after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import aiohttp

from engine.adapters.core_bank import CoreBankClient
from engine.adapters.sms import SmsClient
from engine.pii import PiiCipher
from engine.reference import ReferenceCache
from engine.relay import LatencyObserver, Relay
from engine.resources import CONTROL_POOL_LIMITS
from engine.settings import Settings
from sharding.ids import IdGenerator
from sharding.pools import ShardPools, create_pool
from sharding.worker_lease import WorkerLease

log = logging.getLogger("engine.relay")


@contextlib.asynccontextmanager
async def relay_resources(
    settings: Settings, on_disbursed: LatencyObserver | None = None
) -> AsyncIterator[Relay]:
    control = await create_pool(settings.control_dsn, CONTROL_POOL_LIMITS, "relay")
    lease = WorkerLease(control)
    pools = ShardPools(settings.shard_map(), settings.pool, "relay")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
    refresher: asyncio.Task[None] | None = None
    try:
        await lease.acquire()
        crypto = settings.crypto
        cipher = PiiCipher.from_config(
            crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key
        )
        reference = ReferenceCache(control, cipher, settings.reference_refresh_s)
        await reference.load()
        refresher = asyncio.create_task(reference.refresh_forever(), name="reference-refresh")
        await pools.open()
        external = settings.external
        yield Relay(
            pools=pools,
            ids=IdGenerator(lease.worker, lease.valid),
            cipher=cipher,
            reference=reference,
            core=CoreBankClient(session, external.core_url, external.core_timeout_s),
            sms=SmsClient(session, external.sms_url, external.sms_timeout_s),
            settings=external,
            on_disbursed=on_disbursed,
        )
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        await session.close()
        await pools.close()
        await lease.release()
        await control.close()


async def run_relay(settings: Settings, on_disbursed: LatencyObserver | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with relay_resources(settings, on_disbursed) as relay:
        log.info("relay running", extra={"shards": len(settings.shards)})
        await relay.run(stop)
    log.info("relay stopped")

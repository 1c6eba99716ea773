"""Start-up and clean-up of every long-lived resource, as aiohttp cleanup contexts.

Order: control pool -> ID worker lease -> reference data -> shard pools ->
Redis -> services. Each is
closed in reverse order, and only if it started (aiohttp's cleanup_ctx rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from engine.adapters.bureau import BureauClient, FourFactorClient
from engine.adapters.core_bank import CoreBank, CoreBankClient
from engine.adapters.sms import SmsClient
from engine.http import keys as app_keys
from engine.origination.setup import build_origination
from engine.relay.core_coalescing import CoalescingCore
from engine.relay.executor import Relay
from engine.runtime import metrics
from engine.security.pii import PiiCipher
from engine.services.booking_batch import DrawdownBatches
from engine.services.context import Services
from engine.services.repayment_opening import OpeningBatches
from engine.settings import ExternalSettings
from engine.stores.channel_gate import ChannelGate
from engine.stores.redis_wire import RedisWire
from engine.stores.reference import CONTROL_POOL_LIMITS, ReferenceCache
from engine.stores.watch import watch_shards
from sharding.ids import IdGenerator
from sharding.pools import ShardPools, create_pool
from sharding.worker_lease import WorkerLease


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
    watcher = asyncio.create_task(watch_shards(pools), name="shard-watch")
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await pools.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[app_keys.SETTINGS].redis
    client = RedisWire(settings.url, timeout_s=settings.timeout_s, pending_max=settings.pending_max)
    app[app_keys.REDIS] = client
    limits = app[app_keys.SETTINGS].rate_limit
    app[app_keys.GATE] = ChannelGate(
        client,
        default_per_s=limits.per_channel_per_s,
        burst_s=limits.burst_s,
        workers=app[app_keys.SETTINGS].http.workers,
    )
    yield
    await client.aclose()


async def reference_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[app_keys.SETTINGS]
    crypto = settings.crypto
    cipher = PiiCipher.from_config(crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key)
    app[app_keys.PII] = cipher
    cache = ReferenceCache(
        app[app_keys.CONTROL_POOL],
        cipher,
        settings.reference_refresh_s,
        refuse_published_secrets=settings.env == "prod",
    )
    await cache.load()
    app[app_keys.REFERENCE] = cache
    task = asyncio.create_task(cache.refresh_forever(), name="reference-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    app[app_keys.SERVICES] = Services(
        pools=app[app_keys.SHARD_POOLS],
        ids=app[app_keys.IDS],
        cipher=app[app_keys.PII],
        reference=app[app_keys.REFERENCE],
        redis=app[app_keys.REDIS],
        bookings=DrawdownBatches(
            app[app_keys.SHARD_POOLS],
            batch_max=app[app_keys.SETTINGS].http.booking_batch_max,
            gather_s=app[app_keys.SETTINGS].http.booking_gather_s,
            in_flight=app[app_keys.SETTINGS].http.booking_in_flight,
        ),
        openings=OpeningBatches(
            app[app_keys.SHARD_POOLS],
            batch_max=app[app_keys.SETTINGS].external.repayment_batch_max,
            gather_s=app[app_keys.SETTINGS].http.booking_gather_s,
            in_flight=app[app_keys.SETTINGS].http.booking_in_flight,
        ),
    )
    yield


def _inline_core(client: CoreBankClient, external: ExternalSettings) -> CoreBank:
    """The inline debits' core: concurrent debits share calls unless that is off."""
    if external.inline_debit_in_flight == 0:
        return client
    return CoalescingCore(
        client,
        in_flight=external.inline_debit_in_flight,
        queue_wait_s=external.inline_debit_wait_s,
    )


async def external_ctx(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client for systems we do not own, and the relay's code for inline use."""
    external = app[app_keys.SETTINGS].external
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=100)
    session = aiohttp.ClientSession(connector=connector)
    svc = app[app_keys.SERVICES]
    settings = app[app_keys.SETTINGS]
    app[app_keys.ORIGINATION] = build_origination(settings.origination)
    app[app_keys.BUREAU] = BureauClient(
        session, settings.origination.bureau_url, settings.origination.bureau_timeout_s
    )
    # Four-factor verification: the fake bureau serves it on the local stack.
    app[app_keys.VERIFIER] = FourFactorClient(
        session, settings.origination.bureau_url, settings.origination.bureau_timeout_s
    )
    # The contract's signing codes go straight to the gateway, never through the outbox
    # (whose rows would hold the code in clear).
    app[app_keys.SMS] = SmsClient(session, external.sms_url, external.sms_timeout_s)
    app[app_keys.INLINE_RELAY] = Relay(
        pools=svc.pools,
        ids=svc.ids,
        cipher=svc.cipher,
        reference=svc.reference,
        core=_inline_core(
            CoreBankClient(
                session,
                external.core_url,
                external.inline_debit_wait_s,
                metrics.observe_core_call,
            ),
            external,
        ),
        sms=SmsClient(session, external.sms_url, external.sms_timeout_s),
        settings=external,
    )
    yield
    await session.close()

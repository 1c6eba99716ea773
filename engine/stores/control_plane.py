"""What a process other than the HTTP engine needs from the control database, started
and stopped in order: the pool, an ID worker lease, the PII cipher, the reference data
(kept fresh while the process lives). The relay and the day-end runner use it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores.reference import CONTROL_POOL_LIMITS, ReferenceCache
from sharding.ids import IdGenerator
from sharding.pools import create_pool
from sharding.worker_lease import WorkerLease


@dataclass(frozen=True)
class ControlPlane:
    control: asyncpg.Pool
    ids: IdGenerator
    cipher: PiiCipher
    reference: ReferenceCache


@contextlib.asynccontextmanager
async def control_plane(settings: Settings, name: str) -> AsyncIterator[ControlPlane]:
    control = await create_pool(settings.control_dsn, CONTROL_POOL_LIMITS, name)
    lease = WorkerLease(control)
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
        yield ControlPlane(control, IdGenerator(lease.worker, lease.valid), cipher, reference)
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        await lease.release()
        await control.close()

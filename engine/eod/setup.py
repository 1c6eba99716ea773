"""Everything a day-end runner needs, started and stopped in order:

settings ─► control pool ─► ID worker lease ─► reference data ─► rules ─► EodRunner
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from engine.eod.rules import RULES_FILE_DEFAULT, load_rules
from engine.eod.runner import EodRunner
from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores.reference import CONTROL_POOL_LIMITS, ReferenceCache
from sharding.ids import IdGenerator
from sharding.pools import create_pool
from sharding.worker_lease import WorkerLease


@contextlib.asynccontextmanager
async def eod_runner(settings: Settings, name: str = "eod") -> AsyncIterator[EodRunner]:
    rules = load_rules(
        Path(settings.eod.rules_file) if settings.eod.rules_file else RULES_FILE_DEFAULT
    )
    control = await create_pool(settings.control_dsn, CONTROL_POOL_LIMITS, name)
    lease = WorkerLease(control)
    try:
        await lease.acquire()
        crypto = settings.crypto
        cipher = PiiCipher.from_config(
            crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key
        )
        reference = ReferenceCache(control, cipher, settings.reference_refresh_s)
        await reference.load()
        ids = IdGenerator(lease.worker, lease.valid)
        yield EodRunner(
            settings, control=control, ids=ids, cipher=cipher, reference=reference, rules=rules
        )
    finally:
        await lease.release()
        await control.close()

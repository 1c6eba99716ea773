"""ID worker leases: exclusive while held, and IDs stop when the lease is gone."""

from __future__ import annotations

import asyncpg
import pytest

from engine.settings import Settings
from sharding.ids import IdGenerator, WorkerLeaseLostError
from sharding.worker_lease import WorkerLease


async def test_leases_are_exclusive_and_released(settings: Settings) -> None:
    pool = await asyncpg.create_pool(settings.control_dsn, min_size=1, max_size=2)
    try:
        first, second = WorkerLease(pool), WorkerLease(pool)
        a, b = await first.acquire(), await second.acquire()
        assert a != b
        assert first.valid() and second.valid()
        ids = IdGenerator(a, first.valid)
        ids.next_id(0)
        await first.release()
        assert not first.valid()
        with pytest.raises(WorkerLeaseLostError):
            ids.next_id(0)
        holder = await pool.fetchval("SELECT holder FROM id_worker_lease WHERE worker = $1", b)
        assert holder == second.holder
        # A released number stays blocked for longer than IDs may run ahead.
        blocked = await pool.fetchval(
            "SELECT expires_at > now() FROM id_worker_lease WHERE worker = $1", a
        )
        assert blocked is True
        await second.release()
    finally:
        await pool.close()

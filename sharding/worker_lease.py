"""Exclusive lease of an ID worker number, held in the control database.

The control database has one row per worker number (0..127). A process takes
the row whose lease expired longest ago, renews it every `renew_s`, and gives
it back on shutdown. `valid()` turns false as soon as the lease may have
expired, so the ID generator stops rather than risk a duplicate; a renewal
that succeeds later makes it valid again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import asyncpg

log = logging.getLogger(__name__)

LEASE_S = 60.0
RENEW_S = 10.0

_ACQUIRE_SQL = """
UPDATE id_worker_lease SET holder = $1, expires_at = now() + make_interval(secs => $2)
WHERE worker = (
    SELECT worker FROM id_worker_lease WHERE expires_at < now()
    ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING worker
"""
_RENEW_SQL = """
UPDATE id_worker_lease SET expires_at = now() + make_interval(secs => $3)
WHERE worker = $1 AND holder = $2
RETURNING worker
"""
# Released leases stay blocked a little longer than IDs may run ahead of the clock.
_RELEASE_SQL = """
UPDATE id_worker_lease SET expires_at = now() + interval '2 seconds'
WHERE worker = $1 AND holder = $2
"""


class NoWorkerFreeError(RuntimeError):
    """Every worker number is leased: too many processes, or stale leases."""


class WorkerLease:
    """A held lease; `valid()` is what the ID generator asks before each ID."""

    def __init__(
        self, pool: asyncpg.Pool, lease_s: float = LEASE_S, renew_s: float = RENEW_S
    ) -> None:
        assert renew_s * 3 <= lease_s, "renew well before the lease runs out"
        self._pool = pool
        self._lease_s = lease_s
        self._renew_s = renew_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self.worker = -1
        # Monotonic deadline, kept a margin short of the database's own expiry.
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None

    def valid(self) -> bool:
        return time.monotonic() < self._valid_until

    async def acquire(self) -> int:
        started = time.monotonic()
        worker = await self._pool.fetchval(_ACQUIRE_SQL, self.holder, self._lease_s, timeout=5)
        if worker is None:
            raise NoWorkerFreeError("no ID worker number is free in id_worker_lease")
        self.worker = int(worker)
        self._valid_until = started + self._lease_s - self._renew_s
        self._task = asyncio.create_task(self._renew_forever(), name="worker-lease-renew")
        return self.worker

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._renew_s)
            started = time.monotonic()
            try:
                renewed = await self._pool.fetchval(
                    _RENEW_SQL, self.worker, self.holder, self._lease_s, timeout=5
                )
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("id worker lease renewal failed", extra={"error": repr(exc)})
                continue
            if renewed is None:
                log.error(
                    "id worker lease was taken by another process", extra={"worker": self.worker}
                )
                self._valid_until = 0.0
                return
            self._valid_until = started + self._lease_s - self._renew_s

    async def release(self) -> None:
        self._valid_until = 0.0
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.worker >= 0:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                await self._pool.execute(_RELEASE_SQL, self.worker, self.holder, timeout=5)

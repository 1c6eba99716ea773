"""Periodic gauges: shard pools and reachability (every engine worker), outbox
backlog and the trial balance (the relay). Each loop is bounded and never dies:
a failed probe is itself the signal (shard_up 0), logged once per round.
"""

from __future__ import annotations

import asyncio
import logging

from engine.runtime import metrics
from engine.stores import outbox
from engine.stores.shards import acquire
from ledger.store import trial_balance
from sharding.pools import ShardPools

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
OUTBOX_KINDS = ("disburse", "debit", "sms", "bureau")


async def watch_shards(pools: ShardPools, interval_s: float = 5.0) -> None:
    while True:
        for name, pool in pools.by_name.items():
            size, idle = pool.get_size(), pool.get_idle_size()
            metrics.SHARD_POOL.labels(name, "busy").set(size - idle)
            metrics.SHARD_POOL.labels(name, "idle").set(idle)
            metrics.SHARD_POOL.labels(name, "max").set(pool.get_max_size())
            try:
                async with acquire(pool, PROBE_TIMEOUT_S) as conn:
                    await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
                metrics.SHARD_UP.labels(name).set(1)
            except Exception:  # any failure of the probe means "not usable now"
                metrics.SHARD_UP.labels(name).set(0)
        await asyncio.sleep(interval_s)


async def watch_books(pools: ShardPools, interval_s: float = 5.0, balance_every: int = 12) -> None:
    """Outbox backlog (summed over shards, oldest of all) every `interval_s`; the trial
    balance of each shard every `balance_every` rounds (it reads every account)."""
    round_no = 0
    while True:
        pending = dict.fromkeys(OUTBOX_KINDS, 0)
        oldest_s = dict.fromkeys(OUTBOX_KINDS, 0.0)
        for name, pool in pools.by_name.items():
            try:
                async with acquire(pool, PROBE_TIMEOUT_S) as conn:
                    for kind, count, age_s in await outbox.pending_stats(conn):
                        pending[kind] = pending.get(kind, 0) + count
                        oldest_s[kind] = max(oldest_s.get(kind, 0.0), age_s)
                    if round_no % balance_every == 0:
                        balance = await trial_balance(conn)
                        metrics.LEDGER_IMBALANCE.labels(name).set(balance.imbalance_fen)
            except Exception as exc:  # a watcher never dies: the gap in its gauges is the signal
                log.warning("book watch failed", extra={"shard": name, "error": type(exc).__name__})
        for kind in pending:
            metrics.OUTBOX_PENDING.labels(kind).set(pending[kind])
            metrics.OUTBOX_OLDEST_AGE.labels(kind).set(oldest_s[kind])
        round_no += 1
        await asyncio.sleep(interval_s)

"""An engine worker killed with SIGKILL during a burst of drawdowns: every drawdown
answered 201 exists exactly once, retries with the same key never make a second
loan, and the ledger balances."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from engine.settings import Settings
from ledger.store import trial_balance
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, Reply
from tests.conftest import EngineProcess, Fakes

BURST = 80


@pytest.fixture
def own_engine(fakes: Fakes) -> Iterator[EngineProcess]:
    proc = EngineProcess(fakes, workers=2, relay=False)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _worker_pids(master_pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in out.stdout.split()]


async def test_worker_killed_mid_burst(
    own_engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    api = ApiClient(http, own_engine.base_url)
    customer_id = await api.customer()
    line_id = await api.line(customer_id, limit="300000.00")
    keys = [secrets.token_hex(8) for _ in range(BURST)]

    async def attempt(key: str) -> Reply | None:
        try:
            return await api.drawdown(line_id, "100.00", key=key)
        except (TimeoutError, aiohttp.ClientError):
            return None  # the outcome is unknown: the client will retry with the same key

    async def killer() -> None:
        await asyncio.sleep(0.15)
        victims = _worker_pids(own_engine.proc.pid)
        assert victims
        os.kill(victims[0], signal.SIGKILL)

    results = await asyncio.gather(*(attempt(k) for k in keys), killer())
    first = dict(zip(keys, results[:BURST], strict=True))
    answered = {k: r.json["loan_id"] for k, r in first.items() if r is not None and r.status == 201}
    own_engine.wait_ready()
    # Retry everything not answered 201, same key, until each has an answer (bounded).
    final = dict(answered)
    for _ in range(40):
        pending = [k for k in keys if k not in final]
        if not pending:
            break
        replies = await asyncio.gather(*(attempt(k) for k in pending))
        for key, reply in zip(pending, replies, strict=True):
            if reply is not None and reply.status == 201:
                final[key] = reply.json["loan_id"]
        await asyncio.sleep(0.5)
    assert len(final) == BURST
    for key, loan_id in answered.items():
        assert final[key] == loan_id  # a 201 is never contradicted by a retry
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        loans = await conn.fetch("SELECT loan_id FROM loan WHERE credit_line_id = $1", int(line_id))
        used = await conn.fetchval(
            "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(line_id)
        )
        balance = await trial_balance(conn, deep=True)
    finally:
        await conn.close()
    assert sorted(str(r["loan_id"]) for r in loans) == sorted(final.values())  # each exactly once
    assert used == BURST * 10_000
    assert balance.balanced

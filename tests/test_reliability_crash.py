"""Crash points (issue 17, item 3): SIGKILL of the engine, of the relay and of the day-end
runner at random moments under load, again and again (ten times each under
`make reliability`), each kill shown to have hit something in flight:

- engine: requests sent and not answered at the moment of the kill (and some of them
  cut off, with no answer);
- relay: an outbox row leased (`sending`) whose core call is open — core answers an
  inquiry about it with `processing` at the moment of the kill;
- day-end: a step begun and not finished (`eod_progress`).

Afterwards: every request retried with its key, the relay and the day-end run to their
end, and nothing acknowledged lost, nothing moved twice, the invariants and
`engine reconcile` clean."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.settings import Settings
from tests.battery import (
    FULL,
    IN_FLIGHT,
    Borrower,
    Op,
    World,
    books_of,
    burst,
    drawdown_op,
    repayment_op,
    retry_until_final,
    running,
    scaled,
    tally,
)
from tests.conftest import ROOT
from tests.waiting import eventually

KILLS = scaled(2, 10)
RNG = random.Random(17)
EOD_CONFIG = "[eod]\naccrual_chunk = 2\noverdue_chunk = 2\ndeduct_chunk = 2\nremind_chunk = 2\nprune_chunk = 2\n"


@pytest.fixture(scope="module")
async def world(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("crash")
    (tmp / "engine.toml").write_text(EOD_CONFIG)
    async with running(
        World(settings, tmp, proxied=False, iso_env={"ENGINE_CONFIG": str(tmp / "engine.toml")})
    ) as started:
        yield started


def _load(people: list[Borrower], loans: list[str], n: int) -> list[Op]:
    ops = [drawdown_op(people[i % len(people)], f"{20 + i}.00") for i in range(n)]
    ops += [repayment_op(p, [{"loan_id": loan, "mode": "prepay", "amount": "10.00"}])
            for p, loan in zip(people[: len(loans)], loans, strict=True)]  # fmt: skip
    RNG.shuffle(ops)
    return ops


async def _knobs(http: aiohttp.ClientSession, world: World, **knobs: object) -> None:
    async with http.post(f"{world.core_url}/fake/knobs", json=knobs) as resp:
        assert resp.status == 200, await resp.text()


async def _finish(world: World, api_ops: list[Op], http: aiohttp.ClientSession, fault: str,
                  before: dict[str, set[str]]) -> None:  # fmt: skip
    await retry_until_final(world.api(http), api_ops)
    await world.wait_settled()
    result = await tally(world, fault, api_ops, before)
    result.record()
    assert (result.lost, result.doubled, result.server_errors) == (0, 0, 0), result


async def test_engine_killed_under_load(world: World, http: aiohttp.ClientSession) -> None:
    api = world.api(http)
    assert world.engine is not None
    people = await world.borrowers(api, 4)
    all_ops: list[Op] = []
    cut_off = 0
    for _ in range(KILLS):
        loans = await asyncio.gather(*(world.disbursed(api, p, "500.00") for p in people))
        ops = _load(people, loans, scaled(30, 60))
        before = await books_of(world, ops)
        load = asyncio.ensure_future(burst(api, ops, concurrency=16))
        # A random moment once requests are in flight: within 20 ms, since a burst of
        # 30 requests on a quiet machine can be over in 0.2 s.
        await eventually(lambda: asyncio.sleep(0, IN_FLIGHT[0]), lambda n: n >= 4, timeout_s=20)
        await asyncio.sleep(RNG.uniform(0, 0.02))
        in_flight = IN_FLIGHT[0]
        await asyncio.to_thread(world.engine.kill)
        await load
        assert in_flight > 0, "the kill must land while requests are in flight"
        cut_off += sum(op.first is None for op in ops)
        world.engine.proc = world.engine._spawn()
        await asyncio.to_thread(world.engine.wait_ready)
        await _finish(world, ops, http, "SIGKILL engine", before)
        all_ops += ops
    assert cut_off > 0, "some requests must have been cut off by the kills"
    assert await world.problems() == []
    assert world.reconcile() == ""


async def _leased(world: World, where: str = "lease_until > now()") -> list[asyncpg.Record]:
    rows = []
    for dsn in world.iso.shard_dsns:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            rows += await conn.fetch(
                f"""SELECT outbox_id, kind, ref_id, attempts FROM outbox
                    WHERE kind IN ('disburse', 'debit') AND state = 'sending' AND {where}"""
            )
        finally:
            await conn.close()
    return rows


async def _leased_and_sent(world: World, http: aiohttp.ClientSession) -> list[tuple[int, int]]:
    """Money rows leased by the relay whose request core has received: (row, attempt)."""
    found = []
    for row in (await _leased(world))[:8]:
        reference = ("D" if row["kind"] == "disburse" else "R") + str(row["ref_id"])
        async with http.get(f"{world.core_url}/core/v1/transactions/{reference}") as resp:
            if resp.status == 200:
                found.append((row["outbox_id"], row["attempts"]))
    return found


async def test_relay_killed_with_core_calls_open(world: World, http: aiohttp.ClientSession) -> None:
    api = world.api(http)
    assert world.engine is not None and world.engine.relay is not None
    relay = world.engine.relay
    people = await world.borrowers(api, 4)
    loans = await asyncio.gather(*(world.disbursed(api, p, "500.00") for p in people))
    try:
        for n in range(KILLS):
            # Core decides at once and withholds its answer (longer than the relay waits):
            # each call stays open a while with its outcome already booked at core.
            await _knobs(http, world, timeout_ratio=1.0, batch_timeout_mode="whole",
                         timeout_hang_s=3)  # fmt: skip
            ops = _load(people, loans if n == 0 else [], scaled(20, 40))
            before = await books_of(world, ops)
            load = asyncio.ensure_future(burst(api, ops, concurrency=16))
            sent = await eventually(lambda: _leased_and_sent(world, http), bool, timeout_s=30,
                                    interval_s=0.02)  # fmt: skip
            await asyncio.to_thread(relay.kill)
            # Core had the request and the relay had not closed the row when it died: the
            # call was open (its answer not yet settled) at the moment of the kill.
            open_rows = {(r["outbox_id"], r["attempts"]) for r in await _leased(world, "true")}
            assert set(sent) & open_rows, "the kill must land with a core call open"
            await load
            await _knobs(http, world, timeout_ratio=0.0, batch_timeout_mode="item")
            relay.proc = relay._spawn()
            await _finish(world, ops, http, "SIGKILL relay", before)
    finally:
        await _knobs(http, world, timeout_ratio=0.0, batch_timeout_mode="item")
        if relay.proc.poll() is not None:
            relay.proc = relay._spawn()
    assert await world.problems() == []
    assert world.reconcile() == ""


async def _step_open(world: World, day: object) -> bool:
    for dsn in world.iso.shard_dsns:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            if await conn.fetchval(
                """SELECT count(*) FROM eod_progress WHERE business_date = $1
                   AND finished_at IS NULL AND rows_done > 0""",
                day,
            ):
                return True
        finally:
            await conn.close()
    return False


async def _eod_process(world: World, day: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", "eod", "run", "--date", str(day), "--quiet",
        cwd=ROOT, env=dict(os.environ) | world.iso.env, start_new_session=True,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def test_day_end_killed_under_load(world: World, http: aiohttp.ClientSession,
                                         tmp_path: Path) -> None:  # fmt: skip
    api = world.api(http)
    people = await world.borrowers(api, 6)
    for p in people:  # loans for the day-end to accrue, chunk by chunk
        for _ in range(3):
            await world.disbursed(api, p, "2000.00")
    hits = 0
    for _ in range(KILLS):
        day = await world.iso.business_date()
        ops = _load(people, [], scaled(16, 30))
        before = await books_of(world, ops)
        load = asyncio.ensure_future(burst(api, ops, concurrency=8))
        proc = await _eod_process(world, day)
        deadline = time.monotonic() + 60
        try:
            hit = await eventually(lambda d=day: _step_open(world, d), bool, timeout_s=60,
                                   interval_s=0.01)  # fmt: skip
            await asyncio.sleep(RNG.uniform(0, 0.05))
            hits += hit and proc.returncode is None
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        assert time.monotonic() < deadline
        await load
        done = await asyncio.to_thread(world.iso.cli, "-m", "engine", "eod", "run", "--date",
                                       str(day), "--quiet")  # fmt: skip
        assert done.returncode == 0, done.stderr
        await _finish(world, ops, http, "SIGKILL day-end runner", before)
        assert await world.problems(accrued_through=day) == []
    assert hits >= max(1, KILLS // 2), "most kills must land mid-step"
    assert world.reconcile() == "" or FULL  # the day may have turned at midnight

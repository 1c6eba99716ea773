"""Faults through the proxy (issue 17, item 2): latency, connections dropped mid-statement
and a black hole between the engine (and its relay) and each PostgreSQL server, Redis
and the core. Under each, a burst of drawdowns and repayments; then retries with the
same keys, and: nothing acknowledged lost, nothing moved twice, no 5xx but 503, the
invariants (tests/invariants.py) clean and `engine reconcile` clean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.settings import Settings
from tests.battery import (
    FULL,
    Borrower,
    Op,
    World,
    books_of,
    burst,
    drawdown_op,
    pii_problems,
    repayment_op,
    retry_until_final,
    running,
    scaled,
    tally,
)

# (target, mode, knobs, how long the fault lasts in seconds: the burst runs inside it)
FAULTS: list[tuple[str, str, dict[str, Any], float]] = [
    (target, mode, knobs, seconds)
    for target in ("pg0", "pg1", "redis", "core")
    for mode, knobs, seconds in (
        ("latency", {"latency_s": 0.03}, 4.0),
        # Redis and the core carry few, large chunks (pipelines, keep-alive): cut oftener.
        ("drop", {"drop_ratio": 0.05 if target.startswith("pg") else 0.3}, 4.0),
        ("blackhole", {}, 2.5),
    )
]
# make test: one fault of each kind, on a different target each.
FAST = {("pg0", "drop"), ("pg1", "blackhole"), ("redis", "drop"), ("core", "blackhole"),
        ("pg1", "latency")}  # fmt: skip
CHOSEN = [f for f in FAULTS if FULL or (f[0], f[1]) in FAST]
DRAWDOWNS = scaled(16, 60)
REPAYMENTS = scaled(6, 20)


@pytest.fixture(scope="module")
async def world(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with running(World(settings, tmp_path_factory.mktemp("faults"))) as started:
        yield started


@pytest.fixture(scope="module")
async def people(world: World, http: aiohttp.ClientSession) -> list[Borrower]:
    # Both shards: customers hash to s0 or s1 by ID number.
    return await world.borrowers(world.api(http), 8)


async def _under_fault(world: World, target: str, mode: str, knobs: dict[str, Any],
                       seconds: float, ops: list[Op], http: aiohttp.ClientSession) -> None:  # fmt: skip
    """The burst starts inside the fault; the fault is lifted after `seconds` (or when
    the burst has finished, if sooner), whatever happens."""
    proxy = world.proxies[target]
    api = world.api(http)
    with proxy.fault(mode, **knobs):  # type: ignore[arg-type]
        task = asyncio.ensure_future(burst(api, ops))
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if mode != "blackhole" and not done:
            await task  # latency and drops: the whole burst runs under the fault
    await task


@pytest.mark.parametrize(("target", "mode", "knobs", "seconds"), CHOSEN,
                         ids=[f"{f[0]}-{f[1]}" for f in CHOSEN])  # fmt: skip
async def test_burst_under_fault(
    world: World, people: list[Borrower], http: aiohttp.ClientSession,
    target: str, mode: str, knobs: dict[str, Any], seconds: float,
) -> None:  # fmt: skip
    api = world.api(http)
    payers = [people[n % len(people)] for n in range(REPAYMENTS)]
    loans = await asyncio.gather(*(world.disbursed(api, p, "1000.00") for p in payers))
    ops = [drawdown_op(people[n % len(people)], f"{100 + n}.00") for n in range(DRAWDOWNS)]
    ops += [
        repayment_op(p, [{"loan_id": loan, "mode": "prepay", "amount": "50.00"}])
        for p, loan in zip(payers, loans, strict=True)
    ]
    before = await books_of(world, ops)
    proxy = world.proxies[target]
    cuts_before, swallowed_before = proxy.stats.cuts, proxy.stats.chunks_swallowed
    await _under_fault(world, target, mode, knobs, seconds, ops, http)
    if mode == "drop":
        assert proxy.stats.cuts > cuts_before, "the fault must have cut connections"
    if mode == "blackhole":
        assert proxy.stats.chunks_swallowed > swallowed_before, "the hole must have eaten bytes"
    await retry_until_final(api, ops)
    await world.wait_settled()
    result = await tally(world, f"proxy {target} {mode}", ops, before)
    result.record()
    assert (result.lost, result.doubled, result.server_errors) == (0, 0, 0), result
    assert await world.problems() == []
    assert world.reconcile() == ""
    assert pii_problems(world.log_paths()) == []


def test_proxy_passes_bytes_unchanged(tmp_path: Path) -> None:
    """The proxy itself: what goes in comes out, and a cut is seen by both ends."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            payload = bytes(range(256)) * 1000
            client.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += client.recv(65536)
            assert got == payload
            assert proxy.cut_all() == 1
            assert client.recv(10) == b""  # the cut reaches the client at once
    finally:
        proxy.stop()
        server.close()

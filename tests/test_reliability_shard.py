"""A shard's server stopped under load (issue 17, item 5), the hard ways: SIGKILL of the
postmaster, and `pg_ctl -m immediate` (no checkpoint, crash recovery on restart). The
world's shard s1 lives on PostgreSQL server 1, s0 and control on server 0. While server
1 is down: s0's customers keep being served (201), s1's get 503 SHARD_UNAVAILABLE with
Retry-After, nothing else. After the restart: every acknowledged loan and repayment is
read back, retries with the same keys move nothing twice, nothing is half-written (the
invariants), reconcile clean. Server 1 is started again in a finally-block: the rest of
the suite shares it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.battery import (
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
    send,
    tally,
)
from tests.conftest import stack_command
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def world(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with running(World(settings, tmp_path_factory.mktemp("shard"), proxied=False)) as started:
        yield started


async def _on_each_shard(world: World, api_people: list[Borrower]) -> dict[str, list[Borrower]]:
    shard_map = world.iso.settings.shard_map()
    split: dict[str, list[Borrower]] = {"shard_0": [], "shard_1": []}
    for person in api_people:
        split[shard_map.physical_for(shard_of_id(int(person.customer_id))).name].append(person)
    return split


@pytest.mark.parametrize("how", ["kill-pg", "immediate"])
async def test_shard_server_stopped_under_load(
    world: World, http: aiohttp.ClientSession, how: str
) -> None:
    api = world.api(http)
    split: dict[str, list[Borrower]] = {"shard_0": [], "shard_1": []}
    while min(len(v) for v in split.values()) < 2:
        for name, people in (await _on_each_shard(world, await world.borrowers(api, 4))).items():
            split[name] += people
    people = split["shard_0"][:2] + split["shard_1"][:2]
    loans = await asyncio.gather(*(world.disbursed(api, p, "600.00") for p in people))
    ops: list[Op] = [drawdown_op(people[n % 4], f"{30 + n}.00") for n in range(scaled(40, 120))]
    ops += [repayment_op(p, [{"loan_id": loan, "mode": "prepay", "amount": "20.00"}])
            for p, loan in zip(people, loans, strict=True)]  # fmt: skip
    before = await books_of(world, ops)
    down = {p.line_id for p in split["shard_1"]} | {p.customer_id for p in split["shard_1"]}
    load = asyncio.ensure_future(burst(api, ops, concurrency=8))
    await eventually(lambda: asyncio.sleep(0, sum(op.first is not None for op in ops)),
                     lambda n: n >= 6)  # fmt: skip
    args = ("kill-pg", "1") if how == "kill-pg" else ("stop-pg", "1", "immediate")
    try:
        await stack_command(*args)
        await load
        # While it is down: a fresh request for each side (retried below like the rest).
        fresh = [
            drawdown_op(split["shard_0"][0], "10.00"),
            drawdown_op(split["shard_1"][0], "10.00"),
        ]
        for op in fresh:
            op.first = await send(api, op)
        up_reply, down_reply = (op.first for op in fresh)
    finally:
        await stack_command("start-pg", "1")
    ops += fresh
    assert up_reply is not None and up_reply.status == 201, up_reply
    assert down_reply is not None and down_reply.status == 503, down_reply
    assert down_reply.json["code"] == "SHARD_UNAVAILABLE" and down_reply.headers["Retry-After"]
    for op in ops:  # during the burst: s1's refused with 503 and Retry-After, or served
        mine = (op.body.get("credit_line_id") or op.body.get("customer_id")) in down
        if op.first is not None and op.first.status >= 500:
            assert mine and op.first.status == 503 and op.first.headers.get("Retry-After"), op
    await retry_until_final(api, ops)
    await world.wait_settled()
    result = await tally(world, f"server 1 {how} under load", ops, before)
    result.record()
    assert (result.lost, result.doubled, result.server_errors) == (0, 0, 0), result
    assert await world.problems() == []
    assert world.reconcile() == ""

"""Guarantee 5: a shard that is down fails only its own customers, fast and clearly."""

from __future__ import annotations

import asyncio
import time

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient
from tests.conftest import stack_command

SERVER_1_SHARDS = {"shard_2", "shard_3"}


async def test_down_shard_fails_only_its_customers(api: ApiClient, settings: Settings) -> None:
    shard_map = settings.shard_map()
    on_server = {0: "", 1: ""}
    while not (on_server[0] and on_server[1]):
        customer_id = await api.customer()
        name = shard_map.physical_for(shard_of_id(int(customer_id))).name
        on_server[1 if name in SERVER_1_SHARDS else 0] = customer_id
    lines = {n: await api.line(on_server[n]) for n in (0, 1)}
    await stack_command("stop-pg", "1")
    try:
        started = time.monotonic()
        down = await api.drawdown(lines[1])
        elapsed_s = time.monotonic() - started
        assert (down.status, down.json["code"]) == (503, "SHARD_UNAVAILABLE"), down
        assert down.headers["Retry-After"]
        assert elapsed_s < 5  # fast: bounded by the pool's connect time-out
        up = await api.drawdown(lines[0])
        assert up.status == 201, up
        assert (await api.get(f"/v1/customers/{on_server[1]}/loans")).status == 503
    finally:
        await stack_command("start-pg", "1")
    for _ in range(50):
        again = await api.drawdown(lines[1])
        if again.status == 201:
            break
        await asyncio.sleep(0.2)
    assert again.status == 201, again

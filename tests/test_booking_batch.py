"""The engine's group booking (`engine.services.booking_batch`) against a real database:
drawdowns that queue together leave in one call, a lone one goes at once and alone,
and a call that fails leaves nothing written and nobody waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.migrate import SHARD_MIGRATIONS
from engine.runtime import metrics
from engine.services.booking_batch import DrawdownBatches
from engine.settings import Settings
from loadtest.bench_book import booking_args, prepare
from sharding.pools import ShardPools, ShardUnavailableError
from sharding.shard_map import PhysicalShard, ShardMap

LINES = 8
RECEIPT_NO = 15  # `book_drawdown`'s argument order


@pytest.fixture
async def shard(scratch_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(scratch_db)
    await prepare(conn, SHARD_MIGRATIONS, LINES)
    yield conn
    await conn.close()


@pytest.fixture
async def pools(
    scratch_db: str, settings: Settings, shard: asyncpg.Connection
) -> AsyncIterator[ShardPools]:
    """Every logical shard on the scratch database."""
    pools = ShardPools(ShardMap((PhysicalShard("scratch", scratch_db),)), settings.pool, "test")
    await pools.open()
    yield pools
    await pools.close()


def _batches() -> tuple[float, float]:
    """(calls, drawdowns) booked so far by `DrawdownBatches`, from its histogram."""
    samples = {s.name: s.value for s in next(iter(metrics.BOOKING_BATCH.collect())).samples}
    return samples["drawdown_booking_batch_size_count"], samples["drawdown_booking_batch_size_sum"]


async def test_drawdowns_read_together_are_booked_in_one_call(
    pools: ShardPools, shard: asyncpg.Connection
) -> None:
    batches = DrawdownBatches(pools, gather_s=5.0)
    calls0, booked0 = _batches()

    async def drawdown(n: int) -> str:
        with batches.expecting(0):
            await asyncio.sleep(0.05 * (n % 2))  # reading its line, planning
            return await batches.book(0, booking_args(n, line_id=n + 1))

    assert await asyncio.gather(*(drawdown(n) for n in range(LINES))) == ["booked"] * LINES
    calls, booked = _batches()
    assert booked - booked0 == LINES
    assert calls - calls0 == 1, "the drawdowns on their way were waited for"
    assert await shard.fetchval("SELECT count(*) FROM loan") == LINES


async def test_a_lone_drawdown_does_not_wait(pools: ShardPools) -> None:
    batches = DrawdownBatches(pools, gather_s=30.0)
    with batches.expecting(0):
        outcome = await asyncio.wait_for(batches.book(0, booking_args(0, line_id=1)), 10)
    assert outcome == "booked"


async def test_a_second_drawdown_on_a_line_waits_for_the_next_call(
    pools: ShardPools, shard: asyncpg.Connection
) -> None:
    batches = DrawdownBatches(pools)
    calls0, _ = _batches()
    outcomes = await asyncio.gather(
        *(batches.book(0, booking_args(n, line_id=1 + n % 2)) for n in range(4))
    )
    assert outcomes == ["booked"] * 4
    assert _batches()[0] - calls0 == 2  # lines 1 and 2, then lines 1 and 2 again
    used = await shard.fetch("SELECT used_fen FROM credit_line WHERE used_fen > 0")
    assert sorted(row[0] for row in used) == [2_400_000, 2_400_000]


async def test_a_failed_call_writes_nothing_and_sends_each_back(
    pools: ShardPools, shard: asyncpg.Connection
) -> None:
    batches = DrawdownBatches(pools)
    assert await batches.book(0, booking_args(0, line_id=1)) == "booked"
    taken = booking_args(0, line_id=1)[RECEIPT_NO]
    clash = (
        *booking_args(1, line_id=2)[:RECEIPT_NO],
        taken,
        *booking_args(1, line_id=2)[RECEIPT_NO + 1 :],
    )
    outcomes = await asyncio.gather(
        batches.book(0, booking_args(2, line_id=3)), batches.book(0, clash)
    )
    assert outcomes == ["recheck", "recheck"]  # the caller's locked path redoes each alone
    assert await shard.fetchval("SELECT count(*) FROM loan") == 1
    assert await shard.fetchval("SELECT sum(used_fen) FROM credit_line") == 1_200_000
    assert await batches.book(0, clash) == "recheck"  # alone too: the locked path says why
    assert await batches.book(0, booking_args(3, line_id=4)) == "booked"  # the lane goes on


async def test_a_request_cancelled_while_queued_is_not_booked(
    pools: ShardPools, shard: asyncpg.Connection
) -> None:
    batches = DrawdownBatches(pools)
    first = asyncio.create_task(batches.book(0, booking_args(0, line_id=1)))
    second = asyncio.create_task(batches.book(0, booking_args(1, line_id=2)))
    await asyncio.sleep(0)  # both queued; the call has not left
    second.cancel()
    assert await first == "booked"
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await batches.book(0, booking_args(2, line_id=3)) == "booked"
    assert await shard.fetchval("SELECT count(*) FROM loan WHERE credit_line_id = 2") == 0


async def test_a_lane_cancelled_before_it_ran_is_not_wedged(pools: ShardPools) -> None:
    batches = DrawdownBatches(pools)
    waiting = asyncio.create_task(batches.book(0, booking_args(0, line_id=1)))
    await asyncio.sleep(0)
    for task in list(batches._tasks):  # as at shutdown
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(batches.book(0, booking_args(1, line_id=2)), 10) == "booked"


async def test_an_unreachable_shard_fails_every_waiting_drawdown_at_once(
    settings: Settings,
) -> None:
    gone = ShardMap((PhysicalShard("gone", "postgresql://postgres@127.0.0.1:1/gone"),))
    pools = ShardPools(gone, settings.pool, "test")
    await pools.open()
    try:
        batches = DrawdownBatches(pools)
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(batches.book(0, booking_args(n, line_id=n + 1)) for n in range(3)),
                return_exceptions=True,
            ),
            20,
        )
        assert all(isinstance(reply, ShardUnavailableError) for reply in replies), replies
    finally:
        await pools.close()


async def test_a_line_held_elsewhere_does_not_stall_the_batch(
    pools: ShardPools, shard: asyncpg.Connection
) -> None:
    batches = DrawdownBatches(pools)
    async with shard.transaction():
        await shard.execute("SELECT 1 FROM credit_line WHERE credit_line_id = 1 FOR UPDATE")
        started = asyncio.get_running_loop().time()
        outcomes = await asyncio.gather(
            batches.book(0, booking_args(0, line_id=1)), batches.book(0, booking_args(1, line_id=2))
        )
        waited_s = asyncio.get_running_loop().time() - started
    assert outcomes == ["recheck", "recheck"]  # each redone alone; only line 1's waits
    assert waited_s < 5, waited_s
    assert await shard.fetchval("SELECT count(*) FROM loan") == 0


async def test_a_batch_of_at_most_one_books_each_alone(pools: ShardPools) -> None:
    batches = DrawdownBatches(pools, batch_max=1)
    calls0, _ = _batches()
    outcomes = await asyncio.gather(
        *(batches.book(0, booking_args(n, line_id=n + 1)) for n in range(3))
    )
    assert outcomes == ["booked"] * 3
    assert _batches()[0] - calls0 == 3


class _ShortAnswers(DrawdownBatches):
    """A call that answers one drawdown too few (a bug, here on purpose)."""

    async def _call(self, logical_shard: int, batch: list[object]) -> list[str]:
        return ["booked"] * (len(batch) - 1)


async def test_a_drawdown_left_without_an_outcome_is_not_left_waiting(pools: ShardPools) -> None:
    batches = _ShortAnswers(pools)
    replies = await asyncio.wait_for(
        asyncio.gather(
            *(batches.book(0, booking_args(n, line_id=n + 1)) for n in range(3)),
            return_exceptions=True,
        ),
        10,
    )
    assert replies[:2] == ["booked", "booked"]
    assert isinstance(replies[2], RuntimeError)
    assert (
        await asyncio.wait_for(DrawdownBatches(pools).book(0, booking_args(3, line_id=4)), 10)
        == "booked"
    )

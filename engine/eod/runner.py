"""Running the day-end: the dates to close, and each shard's steps in order.

    run(requested)  dates_to_close ─► for each date, oldest first:
                      cut-over (control DB) ─► wait settle_s if the date moved
                      ─► every physical shard at once (run_shard), each under its lease
                      ─► all finished: the date is closed (eod_day.finished_at);
                         a shard that failed (down, busy): the date stays open, later
                         dates wait, the next run resumes that shard where it stopped
    run_shard       for each step: its checkpoint ─► chunk after chunk, each one
                    transaction that also moves the checkpoint ─► the step finished

The shards' own work goes through one connection per shard, the one holding its
lease: if it is lost, the work stops with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import ModuleType

import asyncpg
import msgspec

from engine.eod import accrual, cure, days, deduct, overdue, progress, prune, remind
from engine.eod.context import EodContext
from engine.eod.governor import Governor
from engine.eod.lease import ShardBusy, shard_lease
from engine.eod.rules import RuleSet
from engine.runtime import metrics
from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores.reference import ReferenceCache
from engine.stores.shards import acquire
from sharding.ids import IdGenerator
from sharding.shard_map import PhysicalShard

log = logging.getLogger(__name__)

STEPS: tuple[ModuleType, ...] = (overdue, cure, accrual, deduct, remind, prune)
STEP_NAMES: tuple[str, ...] = tuple(step.STEP for step in STEPS)
FINAL_STEP = STEP_NAMES[-1]

Progress = Callable[[str, str, int], None]  # (shard, step, rows done so far)


class ShardOutcome(msgspec.Struct, frozen=True):
    shard: str
    finished: bool
    error: str | None = None  # why not


class DayOutcome(msgspec.Struct, frozen=True):
    business_date: dt.date
    closed: bool
    shards: list[ShardOutcome]


class EodRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        control: asyncpg.Pool,
        ids: IdGenerator,
        cipher: PiiCipher,
        reference: ReferenceCache,
        rules: RuleSet,
    ) -> None:
        self._settings = settings
        self._control = control
        self._ids = ids
        self._cipher = cipher
        self._reference = reference
        self._rules = rules
        self._map = settings.shard_map()

    async def calendar(self) -> days.Calendar:
        async with acquire(self._control) as conn:
            return await days.read_calendar(conn)

    async def run(
        self, requested: dt.date | None, on_progress: Progress | None = None
    ) -> list[DayOutcome]:
        """Close `requested` (or every date due to close); stops at the first date a
        shard could not finish. Raises DayRefused for a date that cannot be closed."""
        cutoff = dt.time.fromisoformat(self._settings.eod.cutoff_time)
        todo = days.dates_to_close(
            await self.calendar(),
            requested,
            days.calendar_today(cutoff),
            ended_only=self._settings.env == "prod",
        )
        outcomes = []
        for day in todo:
            outcome = await self.run_day(day, on_progress)
            outcomes.append(outcome)
            if not outcome.closed:
                break
        return outcomes

    async def run_day(self, day: dt.date, on_progress: Progress | None = None) -> DayOutcome:
        async with acquire(self._control) as conn:
            wait_s = await days.cut_over(conn, day, self._settings.eod.settle_s)
        if wait_s > 0:  # every engine must date its transactions D+1 before D's steps run
            log.info("business date moved", extra={"closing": str(day), "settle_s": wait_s})
            await asyncio.sleep(wait_s)
        await self._reference.load()
        at_once = self._settings.eod.shards_at_once or len(self._settings.shards)
        gate = asyncio.Semaphore(at_once)

        async def paced(shard: PhysicalShard, governor: Governor) -> ShardOutcome:
            async with gate:
                return await self.run_shard(shard, day, on_progress, governor)

        async with self._governor().running() as governor:
            shards = await asyncio.gather(
                *(paced(shard, governor) for shard in self._settings.shards)
            )
        closed = all(s.finished for s in shards)
        if closed:
            async with acquire(self._control) as conn:
                await days.mark_finished(conn, day)
        return DayOutcome(day, closed, list(shards))

    def _governor(self) -> Governor:
        url = self._settings.eod.online_metrics_url or (
            f"http://127.0.0.1:{self._settings.http.ops_port}/metrics"
        )
        return Governor(self._settings.eod, url)

    async def run_shard(
        self,
        shard: PhysicalShard,
        day: dt.date,
        on_progress: Progress | None,
        governor: Governor,
    ) -> ShardOutcome:
        ctx = EodContext(
            settings=self._settings.eod,
            ids=self._ids,
            cipher=self._cipher,
            reference=self._reference,
            rules=self._rules,
            shard=shard.name,
            logical_shard=self._map.logical_shards_of(shard.name)[0],
            governor=governor,
        )
        try:
            lease = shard_lease(shard.dsn, f"eod:{shard.name}", self._settings.eod.nice)
            async with lease as conn:
                for step in STEPS:
                    await _run_step(conn, ctx, day, step, on_progress)
        except ShardBusy as exc:
            return ShardOutcome(shard.name, False, str(exc))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "day-end stopped on a shard; the next run resumes it",
                extra={"shard": shard.name, "day": str(day), "error": type(exc).__name__},
            )
            return ShardOutcome(shard.name, False, f"{type(exc).__name__}: {exc}"[:300])
        except Exception as exc:  # a bug: loud, and this shard only (its chunk rolled back)
            log.exception("day-end failed on a shard", extra={"shard": shard.name, "day": str(day)})
            return ShardOutcome(shard.name, False, f"bug: {type(exc).__name__}: {exc}"[:300])
        return ShardOutcome(shard.name, True)

    async def shard_progress(self) -> dict[str, dict[str, progress.Checkpoint] | str]:
        """Each shard's checkpoints of the oldest open date (or the last closed one),
        or why it cannot be read."""
        calendar = await self.calendar()
        day = calendar.open_dates[0] if calendar.open_dates else calendar.last_finished
        result: dict[str, dict[str, progress.Checkpoint] | str] = {}
        for shard in self._settings.shards:
            try:
                conn = await asyncpg.connect(shard.dsn, timeout=5)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                result[shard.name] = f"unreachable: {type(exc).__name__}"
                continue
            try:
                result[shard.name] = {} if day is None else await progress.of_day(conn, day)
            finally:
                await conn.close()
        return result


async def _run_step(
    conn: asyncpg.Connection,
    ctx: EodContext,
    day: dt.date,
    step: ModuleType,
    on_progress: Progress | None,
) -> None:
    name: str = step.STEP
    checkpoint = await progress.begin(conn, day, name)
    if checkpoint.finished:
        return
    started = time.perf_counter()
    after, done = checkpoint.last_key, checkpoint.rows_done
    chunks: AsyncIterator[list[int]] = step.chunks(conn, ctx, day, after)
    run_chunk: Callable[..., Awaitable[int]] = step.run_chunk
    before_chunk: Callable[..., Awaitable[None]] | None = getattr(step, "before_chunk", None)
    async for keys in chunks:
        began = time.perf_counter()
        if before_chunk is not None:
            # The deduction's wait for the relay to finish its debits: the relay's work
            # is this step's too, so the governor's rest is measured on it as well.
            await before_chunk(conn, ctx)
        rows = await _with_retries(run_chunk, conn, ctx, day, after, keys)
        rest_s = ctx.governor.rest_after(time.perf_counter() - began)
        if rest_s > 0:  # leave the machine to online traffic for a while
            await asyncio.sleep(rest_s)
        after = keys[-1]
        done += rows
        metrics.EOD_ROWS.labels(name, ctx.shard).inc(rows)
        if on_progress is not None:
            on_progress(ctx.shard, name, done)
    await progress.finish(conn, day, name)
    metrics.EOD_STEP_SECONDS.labels(name, ctx.shard).observe(time.perf_counter() - started)


# A chunk that lost a deadlock to online traffic, or waited past its lock time-out for a
# row held by a request, is rolled back whole: it is simply done again.
_RETRYABLE = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)
CHUNK_ATTEMPTS_MAX = 5


async def _with_retries(run_chunk: Callable[..., Awaitable[int]], *args: object) -> int:
    for attempt in range(1, CHUNK_ATTEMPTS_MAX + 1):
        try:
            return await run_chunk(*args)
        except _RETRYABLE:
            if attempt == CHUNK_ATTEMPTS_MAX:
                raise
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def describe(outcomes: Sequence[DayOutcome]) -> list[str]:
    """One line per date and shard that did not finish, for people."""
    lines = []
    for outcome in outcomes:
        state = "closed" if outcome.closed else "open"
        lines.append(f"{outcome.business_date}: {state}")
        lines.extend(
            f"  {s.shard}: {s.error}" for s in outcome.shards if not s.finished and s.error
        )
    return lines

"""The day-end on a schedule (`python -m engine eod schedule`; `make up` starts one).

Every `poll_s` it asks the runner to close what is due: the business date once the
wall clock has passed its cut-off (Asia/Shanghai), and any open date a shard did not
finish (a shard that was down resumes when it is back). Several schedulers may run:
each shard's lease lets one work on it at a time. It serves `/metrics` on
`eod.metrics_port`, with `eod_lag_days` per shard, counted against the wall clock
(`days.shard_lag_days`) every `poll_s` by a loop of its own: a run that waits (for a
relay that is down, say) does not hold the gauge at what it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Awaitable, Callable

from engine.eod import days
from engine.eod.runner import FINAL_STEP, EodRunner, describe
from engine.eod.setup import eod_runner
from engine.runtime import gc_tuning, metrics
from engine.runtime.metrics_site import start_metrics_site
from engine.settings import Settings

log = logging.getLogger(__name__)


async def run_scheduler(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    site = await start_metrics_site(settings.eod.metrics_port)
    try:
        async with eod_runner(settings, "eod-scheduler") as runner:
            gc_tuning.settle_after_startup()
            log.info("day-end scheduler running", extra={"cutoff": settings.eod.cutoff_time})
            cutoff = dt.time.fromisoformat(settings.eod.cutoff_time)
            poll_s = settings.eod.poll_s
            lag = asyncio.create_task(_every(poll_s, stop, lambda: _report_lag(runner, cutoff)))
            try:
                await _every(poll_s, stop, lambda: _poll(runner))
            finally:
                lag.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lag
    finally:
        await site.cleanup()
    log.info("day-end scheduler stopped")


async def _every(period_s: float, stop: asyncio.Event, job: Callable[[], Awaitable[None]]) -> None:
    """`job()` now and then every `period_s` (from its end) until `stop`."""
    while not stop.is_set():
        await job()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(period_s):
                await stop.wait()


async def _poll(runner: EodRunner) -> None:
    try:
        outcomes = await runner.run(None)
        for line in describe(outcomes):
            log.info("day-end", extra={"outcome": line})
    except days.DayRefused as exc:
        log.warning("day-end refused", extra={"reason": str(exc)})
    except Exception:  # a bug or the control database: logged, tried again next poll
        log.exception("day-end poll failed")


async def _report_lag(runner: EodRunner, cutoff: dt.time) -> None:
    try:
        calendar = await runner.calendar()
        ended = days.calendar_today(cutoff) - days.ONE_DAY  # the last date the clock ended
        for shard, steps in (await runner.shard_progress()).items():
            done = None if isinstance(steps, str) else steps.get(FINAL_STEP)  # str: unreachable
            finished = done is not None and done.finished
            metrics.EOD_LAG_DAYS.labels(shard).set(days.shard_lag_days(calendar, ended, finished))
    except Exception:  # the control database: the gauge keeps its value, the next try may do
        log.exception("day-end lag not measured")

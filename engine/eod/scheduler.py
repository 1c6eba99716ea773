"""The day-end on a schedule (`python -m engine eod schedule`; `make up` starts one).

Every `poll_s` it asks the runner to close what is due: the business date once the
wall clock has passed its cut-off (Asia/Shanghai), and any open date a shard did not
finish (a shard that was down resumes when it is back). Several schedulers may run:
each shard's lease lets one work on it at a time. It serves `/metrics` on
`eod.metrics_port`, with `eod_lag_days` per shard from each poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

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
            while not stop.is_set():
                await _poll(runner)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.eod.poll_s):
                        await stop.wait()
    finally:
        await site.cleanup()
    log.info("day-end scheduler stopped")


async def _poll(runner: EodRunner) -> None:
    try:
        outcomes = await runner.run(None)
        for line in describe(outcomes):
            log.info("day-end", extra={"outcome": line})
        await _report_lag(runner)
    except days.DayRefused as exc:
        log.warning("day-end refused", extra={"reason": str(exc)})
    except Exception:  # a bug or the control database: logged, tried again next poll
        log.exception("day-end poll failed")


async def _report_lag(runner: EodRunner) -> None:
    calendar = await runner.calendar()
    ended = calendar.business_date - days.ONE_DAY  # the last date that has ended
    for shard, steps in (await runner.shard_progress()).items():
        if isinstance(steps, str):  # unreachable: its lag is what the oldest open date says
            oldest = calendar.open_dates[0] if calendar.open_dates else ended
            metrics.EOD_LAG_DAYS.labels(shard).set((ended - oldest).days + 1)
            continue
        last = calendar.last_finished
        done = steps.get(FINAL_STEP)
        if done is not None and done.finished and calendar.open_dates:
            last = calendar.open_dates[0]  # this shard finished the open date
        lag = 0 if last is None else max(0, (ended - last).days)
        metrics.EOD_LAG_DAYS.labels(shard).set(lag)

"""The day-end's pace, set from the online p99: it works flat out while the channels'
money-moving requests stay fast, and yields as soon as they slow down.

Every `online_window_s`, while a date's steps run, the governor reads the engines'
latency histogram (`http_request_duration_seconds` of POST /v1/drawdowns and
/v1/repayments, from the ops listener's /metrics) and takes the p99 of the requests
answered since its last reading, interpolated within its bucket as Prometheus's
`histogram_quantile` does. The duty cycle (the share of its time a shard's runner
works: after a chunk of t seconds it rests t × (1 − duty) / duty) then moves as TCP's
window does (AIMD):

    p99 above the target          duty × 1/2   (not below DUTY_MIN)
    p99 under half the target     duty + 0.1   (not above eod.duty_cycle, the ceiling)
    in between, or too few requests to tell, or the engines not answering: unchanged

and, as TCP's slow start, it begins low (DUTY_START) and doubles every window while
the p99 stays under half the target (or too few requests come to tell: nothing to
protect), until the first window that is not: a day-end that began flat out had
already slowed the channels for a window before its first reading (measured: a p99
eight times the one without it, on a date whose steps took less than two windows).
If the engines cannot be read from the start, there is nothing to govern by: the
ceiling, as without a governor.

With `eod.online_p99_ms` = 0 (the default) there is no governor: the duty cycle is the
ceiling throughout. A target is the SLO of the bank (the load test gates drawdowns at
200 ms) or, for the benchmark, twice the p99 measured without the day-end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from engine.runtime import metrics
from engine.settings import EodSettings

log = logging.getLogger(__name__)

HISTOGRAM: Final = "http_request_duration_seconds"
ROUTES: Final = frozenset({"/v1/drawdowns", "/v1/repayments"})
DUTY_MIN: Final = 0.01  # the relay's share of a busy day-end needs room below 0.05
DUTY_START: Final = 0.1  # slow start: 0.1, 0.2, 0.4, 0.8, the ceiling in four windows
REST_MAX_S: Final = 30.0
REQUESTS_MIN: Final = 20  # fewer answered in a window: its p99 is noise
SCRAPE_TIMEOUT_S: Final = 1.0
BODY_MAX: Final = 4 << 20

Buckets = dict[float, float]  # upper bound (s) -> cumulative count


def online_buckets(exposition: str, routes: Iterable[str] = ROUTES) -> Buckets:
    """The POST buckets of `routes`, summed over routes (and workers), cumulative."""
    wanted = set(routes)
    summed: Buckets = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != HISTOGRAM:
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == HISTOGRAM + "_bucket"
                and labels.get("method") == "POST"
                and labels.get("route") in wanted
            ):
                bound = float(labels["le"])
                summed[bound] = summed.get(bound, 0.0) + sample.value
    return summed


def p99_between(before: Mapping[float, float], now: Mapping[float, float]) -> float | None:
    """The p99 (seconds) of what was answered between two readings, or None if fewer
    than REQUESTS_MIN were (or a restarted engine reset its counts)."""
    bounds = sorted(now)
    deltas = [now[b] - before.get(b, 0.0) for b in bounds]
    if not bounds or any(d < 0 for d in deltas) or deltas[-1] < REQUESTS_MIN:
        return None
    rank = 0.99 * deltas[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, deltas, strict=True):
        if count >= rank:
            if math.isinf(bound):  # beyond the last finite bucket: its bound is all we know
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def next_duty(
    duty: float, p99_s: float | None, target_s: float, ceiling: float, *, starting: bool = False
) -> float:
    """One step of the duty cycle: AIMD, or doubling while `starting` (slow start, where
    too few requests to tell count as fast: there is nothing to slow)."""
    if p99_s is None:
        return min(ceiling, duty * 2) if starting else duty
    if p99_s > target_s:
        return max(DUTY_MIN, duty / 2)
    if p99_s < target_s / 2:
        return min(ceiling, duty * 2 if starting else round(duty + 0.1, 3))
    return duty


class Governor:
    """The duty cycle every shard's runner reads after each chunk."""

    def __init__(self, settings: EodSettings, metrics_url: str) -> None:
        self._ceiling = settings.duty_cycle
        self._target_s = settings.online_p99_ms / 1000
        self._window_s = settings.online_window_s
        self._url = metrics_url
        self._starting = self.enabled  # slow start, until a window is not fast
        self.duty = min(DUTY_START, self._ceiling) if self.enabled else self._ceiling
        self._last: Buckets | None = None
        metrics.EOD_DUTY.set(self.duty)

    @property
    def enabled(self) -> bool:
        return self._target_s > 0

    def rest_after(self, worked_s: float) -> float:
        """How long a runner rests after a chunk that took `worked_s` (at most REST_MAX_S:
        a chunk that waited long, for a relay that was down say, is no measure of load)."""
        return min(REST_MAX_S, worked_s * (1 - self.duty) / self.duty)

    def observe(self, buckets: Buckets | None) -> None:
        """Take one reading (None: the engines did not answer) and move the duty."""
        before = self._last
        if buckets is None:
            if before is None and self._starting:  # never read: nothing to govern by
                log.warning("day-end governor: the engines' latency is unreadable, full pace")
                self._starting = False
                self._set(self._ceiling, None)
            return
        self._last = buckets
        if before is None:  # the first reading: where the counts begin
            return
        p99 = p99_between(before, buckets)
        if p99 is not None:
            metrics.EOD_ONLINE_P99.set(p99)
        duty = next_duty(self.duty, p99, self._target_s, self._ceiling, starting=self._starting)
        if self._starting:  # it ends at the ceiling or at the first window that is not fast
            fast = p99 is None or p99 < self._target_s / 2
            self._starting = fast and duty < self._ceiling
        self._set(duty, p99)

    def _set(self, duty: float, p99: float | None) -> None:
        if duty != self.duty:
            log.info("day-end pace", extra={"duty": duty, "online_p99_s": p99})
        self.duty = duty
        metrics.EOD_DUTY.set(duty)

    async def _read(self, session: aiohttp.ClientSession) -> Buckets | None:
        try:
            async with session.get(self._url) as response:
                if response.status != 200:
                    return None
                body = await response.content.read(BODY_MAX)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("online latency unread", extra={"error": type(exc).__name__})
            return None
        try:
            return online_buckets(body.decode())
        except ValueError:  # not an exposition we can read
            return None

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    self.observe(await self._read(session))
                except Exception:  # a bug here must not stop the day-end: keep the pace
                    log.exception("day-end governor: reading skipped")
                await asyncio.sleep(self._window_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Governor]:
        """Governs while the block runs (a fixed duty if no target is set)."""
        if not self.enabled:
            yield self
            return
        task = asyncio.create_task(self._loop(), name="eod-governor")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

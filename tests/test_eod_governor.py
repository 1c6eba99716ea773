"""The day-end's governor (engine/eod/governor.py): the p99 it reads from the engines'
histogram, the duty cycle it sets from it, and its loop against a live /metrics."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from engine.eod.governor import (
    DUTY_MIN,
    DUTY_START,
    REQUESTS_MIN,
    REST_MAX_S,
    Governor,
    next_duty,
    online_buckets,
    p99_between,
)
from engine.runtime.metrics import HTTP_BUCKETS_S
from engine.settings import EodSettings
from tests.conftest import free_port

INF = float("inf")


def _exposition(observations: list[tuple[str, str, float]]) -> str:
    """What an engine's /metrics says after answering `observations`."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "http_request_duration_seconds",
        "Time to answer.",
        ["route", "method"],
        buckets=HTTP_BUCKETS_S,
        registry=registry,
    )
    for route, method, seconds in observations:
        histogram.labels(route, method).observe(seconds)
    return generate_latest(registry).decode()


def test_only_money_moving_posts_are_read() -> None:
    text = _exposition(
        [("/v1/drawdowns", "POST", 0.004)] * 3
        + [("/v1/repayments", "POST", 0.3)] * 2
        + [("/v1/applications", "POST", 9.0), ("/v1/loans/{loan_id}", "GET", 9.0)]
    )
    buckets = online_buckets(text)
    assert buckets[0.005] == 3 and buckets[0.25] == 3 and buckets[0.5] == 5
    assert buckets[INF] == 5  # the slow origination and the read are not counted


def test_the_p99_is_interpolated_within_its_bucket() -> None:
    before = {0.05: 0.0, 0.1: 0.0, 0.25: 0.0, INF: 0.0}
    # 98 answered within 50 ms, two between 100 and 250 ms: the 99th of 100 lies
    # half-way through the (0.1, 0.25] bucket's two.
    now = {0.05: 98.0, 0.1: 98.0, 0.25: 100.0, INF: 100.0}
    assert p99_between(before, now) == pytest.approx(0.175)
    # Counts grow between readings: only the difference counts.
    later = {0.05: 1098.0, 0.1: 1098.0, 0.25: 1100.0, INF: 1100.0}
    assert p99_between(now, later) == pytest.approx(0.05 * 990 / 1000)
    # Beyond the last finite bucket, its bound is all that is known.
    slow = {0.05: 0.0, 0.1: 0.0, 0.25: 0.0, INF: 100.0}
    assert p99_between(before, slow) == 0.25


def test_no_p99_from_too_few_requests_or_reset_counts() -> None:
    before = {0.05: 0.0, INF: 0.0}
    assert p99_between(before, {0.05: REQUESTS_MIN - 1.0, INF: REQUESTS_MIN - 1.0}) is None
    assert p99_between({0.05: 500.0, INF: 500.0}, {0.05: 30.0, INF: 30.0}) is None
    assert p99_between(before, {}) is None


def test_the_duty_halves_when_slow_and_climbs_back_when_fast() -> None:
    target, ceiling = 0.1, 1.0
    assert next_duty(1.0, 0.2, target, ceiling) == 0.5
    assert next_duty(DUTY_MIN, 0.2, target, ceiling) == DUTY_MIN
    assert next_duty(0.5, 0.04, target, ceiling) == 0.6
    assert next_duty(0.95, 0.01, target, ceiling) == ceiling
    assert next_duty(0.5, 0.07, target, ceiling) == 0.5  # between half and the target
    assert next_duty(0.5, None, target, ceiling) == 0.5  # nothing to go by
    # Slow start: doubles while fast, halves as soon as slow.
    assert next_duty(0.1, 0.04, target, ceiling, starting=True) == 0.2
    assert next_duty(0.8, 0.04, target, ceiling, starting=True) == ceiling
    assert next_duty(0.4, 0.2, target, ceiling, starting=True) == 0.2
    assert next_duty(0.2, None, target, ceiling, starting=True) == 0.4  # none to slow


class FakeEngine:
    """An engine's ops listener whose latencies the test sets."""

    def __init__(self) -> None:
        self.observations: list[tuple[str, str, float]] = []
        self.port = free_port()

    def answer(self, count: int, seconds: float) -> None:
        self.observations += [("/v1/drawdowns", "POST", seconds)] * count

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(text=_exposition(self.observations))


@pytest.fixture
async def engine() -> AsyncIterator[FakeEngine]:
    fake = FakeEngine()
    app = web.Application()
    app.router.add_get("/metrics", fake.metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fake.port).start()
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _traffic_until(
    engine: FakeEngine, seconds: float, governor: Governor, done: Callable[[float], bool]
) -> None:
    """Requests answered in `seconds` each, 50 every 50 ms, until `done(duty)`."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while not done(governor.duty):
        assert asyncio.get_running_loop().time() < deadline, governor.duty
        engine.answer(50, seconds)
        await asyncio.sleep(0.05)


async def test_the_governor_yields_to_slow_requests_and_returns(engine: FakeEngine) -> None:
    settings = EodSettings(duty_cycle=0.9, online_p99_ms=100, online_window_s=0.2)
    governor = Governor(settings, f"http://127.0.0.1:{engine.port}/metrics")
    assert governor.enabled and governor.duty == DUTY_START  # slow start
    async with governor.running():
        seen: list[float] = []
        # Fast: doubles every window up to the ceiling, and stays there.
        await _traffic_until(engine, 0.02, governor, lambda duty: seen.append(duty) or duty == 0.9)
        assert sorted(set(seen)) == [0.1, 0.2, 0.4, 0.8, 0.9], seen
        await asyncio.sleep(0.6)
        assert governor.duty == 0.9 and governor.rest_after(0.9) == pytest.approx(0.1)
        # Slow: halved, and halved again while it lasts.
        await _traffic_until(engine, 0.4, governor, lambda duty: duty <= 0.225)
        # Fast again (the slow ones now under 1 %): back up by tenths to the ceiling.
        await _traffic_until(engine, 0.02, governor, lambda duty: duty == 0.9)


async def test_slow_start_ends_at_the_first_slow_window(engine: FakeEngine) -> None:
    """Slow from the start: halved (not doubled) and then climbing by tenths, not
    doubling again; with too few requests to tell, slow start doubles (nothing to slow)."""
    settings = EodSettings(duty_cycle=1.0, online_p99_ms=100, online_window_s=0.2)
    governor = Governor(settings, f"http://127.0.0.1:{engine.port}/metrics")
    async with governor.running():
        await asyncio.sleep(0.5)  # no requests at all: up from DUTY_START
        assert governor.duty > DUTY_START
        await _traffic_until(engine, 0.4, governor, lambda duty: duty <= 0.05)
        seen: list[float] = []
        await _traffic_until(engine, 0.02, governor, lambda duty: seen.append(duty) or duty >= 0.35)
        steps = sorted(set(seen))
        assert all(round(b - a, 3) <= 0.1 for a, b in itertools.pairwise(steps)), steps


async def test_no_target_or_no_engine_leaves_the_ceiling() -> None:
    off = Governor(EodSettings(duty_cycle=0.5), "http://127.0.0.1:9/metrics")
    assert not off.enabled
    async with off.running():
        assert off.duty == 0.5 and off.rest_after(1.0) == pytest.approx(1.0)
        # A chunk that waited long (for a relay that was down) rests no longer than this.
        assert off.rest_after(600.0) == REST_MAX_S
    settings = EodSettings(online_p99_ms=100, online_window_s=0.2)
    silent = Governor(settings, f"http://127.0.0.1:{free_port()}/metrics")
    async with silent.running():
        await asyncio.sleep(0.5)
    assert silent.duty == 1.0

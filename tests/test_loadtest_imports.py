"""Every loadtest module imports: the benchmarks run only by hand (`make bench`,
`make bench-eod`), so a module broken at import time (a dataclass field order after a
merge, once) would otherwise surface only on the day someone measures."""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil

import pytest

import loadtest

# The locustfile monkey-patches the process (gevent) on import; Locust's own smoke test
# (test_loadtest_smoke) runs it in a process of its own.
GEVENT = {"loadtest.locustfile"}
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(loadtest.__path__, prefix="loadtest.")
    if info.name not in GEVENT
)


def test_the_benchmarks_are_found() -> None:
    assert {"loadtest.bench_api", "loadtest.bench_eod", "loadtest.bench_book"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_online_cost_reads_its_rates_and_refuses_others() -> None:
    from loadtest.online_cost import rates_arg

    assert rates_arg("40:30,85.5:60") == [(40.0, 30.0), (85.5, 60.0)]
    for bad in ("85", "85:", "a:b", "0:10", "85:60,"):
        with pytest.raises(argparse.ArgumentTypeError, match="DRAWDOWNS:REPAYMENTS"):
            rates_arg(bad)


def test_bench_api_reads_its_in_flight_counts_and_refuses_others() -> None:
    from loadtest.bench_api import _counts, _parser

    assert _counts("32,64,128") == (32, 64, 128)
    assert _counts("8") == (8,)
    defaults = _parser().parse_args([])
    assert (defaults.concurrency, defaults.pgbench_clients) == ((32, 64, 128), (4, 8, 16))
    for bad in ("", "32,", "a", "0", "32,513", "-4"):
        with pytest.raises(argparse.ArgumentTypeError):
            _counts(bad)


def test_bench_api_table_shows_the_cpu_at_half_saturation(monkeypatch: pytest.MonkeyPatch) -> None:
    """At half saturation a request costs more than at saturation: the table shows both,
    and how busy the half load keeps the machine (CPU per request x rate / CPUs)."""
    from loadtest import bench_api
    from loadtest.bench_api import OpenLoop, Results, Sweep, Tally, table
    from loadtest.histogram_scrape import HistogramReading

    monkeypatch.setattr(bench_api.os, "cpu_count", lambda: 2)
    saturated = Tally(latencies_s=[0.01] * 600, window_s=1.0)
    half = Tally(latencies_s=[0.005] * 300, window_s=1.0)
    draws = Sweep({64: 600.0}, saturated, 64, {"postgres": 1.0, "engine": 1.0})
    pays = Sweep({64: 600.0}, saturated, 64, {})
    money = HistogramReading({0.1: 100, 0.25: 290, 0.5: 300, math.inf: 300}, 300, 30.0)
    draw_half = OpenLoop(300.0, half, {"postgres": 2.0, "engine": 3.0}, money)
    assert draw_half.machine_busy() == pytest.approx(0.75)  # 5 ms x 300/s on 2 CPUs
    results = Results(2000.0, draws, draw_half, pays, 1000)
    args = bench_api._parser().parse_args([])
    text = table(results, args)
    assert "| CPU per drawdown at saturation, ms (postgres 1.00, engine 1.00) | 2.00 ms |" in text
    assert (
        "| CPU per drawdown at half saturation, ms (postgres 2.00, engine 3.00; the machine "
        "75% busy) | 5.00 ms |"
    ) in text
    assert (
        "| drawdowns' money on the card at half saturation (the relay's "
        "disbursement_latency_seconds) | mean 100 ms, p99 <= 0.5 s (300 paid) |"
    ) in text
    assert "repayment at half saturation" not in text  # not measured: no row

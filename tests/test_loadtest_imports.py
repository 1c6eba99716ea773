"""Every loadtest module imports: the benchmarks run only by hand (`make bench`,
`make bench-eod`), so a module broken at import time (a dataclass field order after a
merge, once) would otherwise surface only on the day someone measures."""

from __future__ import annotations

import argparse
import importlib
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

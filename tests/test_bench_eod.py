"""`loadtest.bench_eod` asks whether the day-end can start before it loads the machine
for minutes: run by hand without ENGINE_ENV (which means prod, and prod wants keys) it
once measured a day-end that had exited at once and appended that to BENCHMARKS.md."""

from __future__ import annotations

import pytest

from loadtest.bench_eod import _parser, day_end_can_start


def test_a_day_end_refused_at_its_start_is_found_before_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ENGINE_ENV", raising=False)
    for name in ("ENGINE_PII_KEYS", "ENGINE_PII_INDEX_KEY", "ENGINE_PII_KEY_VERSION"):
        monkeypatch.delenv(name, raising=False)
    why = day_end_can_start()
    assert why is not None
    assert "ENGINE_ENV" in why  # the engine's own message, naming what to set


def test_fixed_rates_are_two_positive_numbers() -> None:
    parser = _parser()
    assert parser.parse_args(["--rates", "150,100.5"]).rates == (150.0, 100.5)
    assert parser.parse_args([]).rates is None  # a quarter of each saturated rate
    for bad in ("150", "150,0", "a,b", "1,2,3"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--rates", bad])


def test_the_day_ends_cpu_counts_its_relays_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The day-end's CPU per loan takes in the batch relay and its backends (the
    auto-debits' completions are the day-end's work too), not only the runner's."""
    import datetime as dt

    from loadtest import bench_eod
    from loadtest.bench_api import Tally
    from loadtest.bench_eod import Run, _cpu_rows

    monkeypatch.setattr(bench_eod.os, "cpu_count", lambda: 2)
    roles = {"postgres": 0.0, "eod": 0.0, "engine": 0.0, "relay": 0.0, "fakes": 0.0}
    t = Tally()
    run = Run(
        dt.date(2026, 12, 6), 100.0, 0, [], t, t, t, t, t, t, 100.0, 50.0, 0.0,
        roles | {"engine": 30.0, "postgres": 30.0}, 20.0,  # online alone: 3 cores-s a second
        roles | {"eod": 5.0}, {"eod": 15.0, "relay": 12.0}, 8.0, "nice 19",
    )  # fmt: skip
    rows = "\n".join(_cpu_rows(run, 1_000_000))
    assert (
        "runner / its shard backends; batch relay / its backends | 5 s / 15 s; 8 s / 12 s" in rows
    )
    assert "(all steps, its relay's work included) | 40 µs |" in rows  # 40 s / 1 M loans
    assert "cores to close 20,000,000 loans in 10 min at that cost | 1.3 |" in rows
    assert "cores the online loops left the day-end here | 0.00 |" in rows  # 3 of 2

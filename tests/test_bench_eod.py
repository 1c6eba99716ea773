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

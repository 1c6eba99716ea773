"""`loadtest.bench_eod` asks whether the day-end can start before it loads the machine
for minutes: run by hand without ENGINE_ENV (which means prod, and prod wants keys) it
once measured a day-end that had exited at once and appended that to BENCHMARKS.md."""

from __future__ import annotations

import pytest

from loadtest.bench_eod import day_end_can_start


def test_a_day_end_refused_at_its_start_is_found_before_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ENGINE_ENV", raising=False)
    for name in ("ENGINE_PII_KEYS", "ENGINE_PII_INDEX_KEY", "ENGINE_PII_KEY_VERSION"):
        monkeypatch.delenv(name, raising=False)
    why = day_end_can_start()
    assert why is not None
    assert "ENGINE_ENV" in why  # the engine's own message, naming what to set

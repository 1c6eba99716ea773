"""Which dates a run may close, and how far behind the clock a shard is
(engine/eod/days.py): `dates_to_close` and `shard_lag_days`, which `eod_lag_days` shows
and `DayEndBehind` fires on above 1."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.eod.days import Calendar, DayRefused, dates_to_close, shard_lag_days

D = dt.date(2026, 12, 20)
DAY = dt.timedelta(days=1)


def test_on_time_and_during_last_nights_run() -> None:
    closed = Calendar(D + DAY, D, ())
    assert shard_lag_days(closed, D, False) == 0
    running = Calendar(D + DAY, D - DAY, (D,))  # D cut over, its steps under way
    assert shard_lag_days(running, D, False) == 1
    assert shard_lag_days(running, D, True) == 0  # this shard has finished D


def test_a_shard_down_for_days_counts_every_ended_date_not_only_one() -> None:
    """A run stops at the first date it cannot close, so the business date stays at
    D+1 while D is open; against the business date a shard down a week looked one
    day behind and the alert (> 1) never fired."""
    stuck = Calendar(D + DAY, D - DAY, (D,))
    assert [shard_lag_days(stuck, D + n * DAY, False) for n in range(4)] == [1, 2, 3, 4]
    assert shard_lag_days(stuck, D + 3 * DAY, True) == 3  # the shards that did close D


def test_no_run_at_all_counts_too() -> None:
    """The scheduler not running: nothing open, the business date left behind the clock."""
    idle = Calendar(D + DAY, D, ())
    assert shard_lag_days(idle, D + 2 * DAY, False) == 2


def test_a_new_book_and_a_clock_ahead_of_the_wall_are_not_behind() -> None:
    assert shard_lag_days(Calendar(D, None, ()), D - DAY, False) == 0  # first day running
    assert shard_lag_days(Calendar(D + DAY, None, (D,)), D, False) == 1  # its first run failed
    ahead = Calendar(D + 40 * DAY, D + 39 * DAY, ())  # a test's or a demo's future dates
    assert shard_lag_days(ahead, D, False) == 0


def test_in_production_a_date_asked_for_closes_only_once_the_clock_has_ended_it() -> None:
    running = Calendar(D, D - DAY, ())  # D is the business date and the clock's date
    with pytest.raises(DayRefused, match="has not ended"):
        dates_to_close(running, D, D)
    assert dates_to_close(running, D, D + DAY) == [D]  # after its cut-off
    assert dates_to_close(running, D, D, ended_only=False) == [D]  # dev and test
    assert dates_to_close(running, None, D) == []  # the scheduler waits for the cut-off
    resumed = Calendar(D + DAY, D - DAY, (D,))  # cut over already: its run goes on
    assert dates_to_close(resumed, D, D) == [D]

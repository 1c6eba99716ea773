"""Due dates and day counts: the calendar side of a repayment plan.

Installment `k` falls due on the drawdown's day of month, `k` months later; a
day the month lacks becomes the month's last day:

    start 2026-01-31  ->  k=1 2026-02-28, k=2 2026-03-31, k=3 2026-04-30, ...

Every due date is computed from the start date, never from the previous due
date: chaining would turn the 31st into the 28th for good after February.

Days are counted as `later - earlier` (the first day counted, the last not):
the interest of a period from 2026-01-31 to 2026-02-28 runs 28 days.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

MONTHS_PER_YEAR = 12
# Limit on the cached due-date lists: one entry per (start, count) seen lately.
DUE_DATES_CACHE_ENTRIES_MAX = 4096

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_leap_year(year: int) -> bool:
    """Gregorian leap year."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    """Number of days of `month` (1-12) in `year`."""
    assert 1 <= month <= MONTHS_PER_YEAR, month
    if month == 2 and is_leap_year(year):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def add_months(start: date, months: int) -> date:
    """The same day of month `months` months after `start`, clamped to the month's end.

    Raises ValueError (from `date`) if the result falls beyond year 9999.
    """
    assert months >= 0, months
    month_index = start.month - 1 + months
    year = start.year + month_index // MONTHS_PER_YEAR
    month = month_index % MONTHS_PER_YEAR + 1
    return date(year, month, min(start.day, days_in_month(year, month)))


def term_fits_calendar(start: date, months: int) -> bool:
    """Whether `add_months(start, months)` stays within the `date` range."""
    return start.year + (start.month - 1 + months) // MONTHS_PER_YEAR <= date.max.year


@lru_cache(maxsize=DUE_DATES_CACHE_ENTRIES_MAX)
def due_dates(start: date, count: int) -> tuple[date, ...]:
    """Due dates of installments 1..count of a plan drawn down on `start`.

    Cached because every drawdown of the same day asks for the same list; the
    result is an immutable tuple, so sharing it is safe.
    """
    assert count >= 0, count
    return tuple(add_months(start, seq) for seq in range(1, count + 1))


def days_between(earlier: date, later: date) -> int:
    """Actual days from `earlier` to `later`; `later` must not precede `earlier`."""
    days = (later - earlier).days
    assert days >= 0, (earlier, later)
    return days

"""Which business dates a day-end run closes, and the cut-over that moves the date.

    business_clock (control DB): the business date D that online transactions are dated
    eod_day: the dates already cut over (D moved to D+1), and when each was finished

A run closes dates in order. Closing D needs D cut over: if the clock still shows D,
it moves to D+1 first (online traffic is dated D+1 from then on, and the run waits
`settle_s` for every engine to see it). Refused, with the reason: a date after the
business date (it has not begun), a date before the last one finished (history is
not redone), a date with an earlier one still open (the run closes that one first
when no date is asked for). A finished date asked again does nothing.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

SHANGHAI = ZoneInfo("Asia/Shanghai")
ONE_DAY = dt.timedelta(days=1)
CATCH_UP_DAYS_MAX = 366  # a run closes at most this many missed dates in one go


class DayRefused(ValueError):
    """The date cannot be closed now; the message says why and what to do."""


class Calendar(msgspec.Struct, frozen=True):
    business_date: dt.date  # what online transactions are dated now
    last_finished: dt.date | None  # the last date closed on every shard
    open_dates: tuple[dt.date, ...]  # cut over, not finished on every shard


async def read_calendar(conn: asyncpg.Connection) -> Calendar:
    business_date = await conn.fetchval("SELECT business_date FROM business_clock")
    last = await conn.fetchval(
        "SELECT max(business_date) FROM eod_day WHERE finished_at IS NOT NULL"
    )
    open_rows = await conn.fetch(
        "SELECT business_date FROM eod_day WHERE finished_at IS NULL ORDER BY business_date"
    )
    return Calendar(business_date, last, tuple(r["business_date"] for r in open_rows))


def calendar_today(cutoff: dt.time, now: dt.datetime | None = None) -> dt.date:
    """The business date the wall clock says it is: a day ends at `cutoff` of the next
    calendar day, Asia/Shanghai time."""
    local = (now or dt.datetime.now(SHANGHAI)).astimezone(SHANGHAI)
    shifted = local - dt.timedelta(hours=cutoff.hour, minutes=cutoff.minute)
    return shifted.date()


def dates_to_close(
    calendar: Calendar, requested: dt.date | None, today: dt.date, *, ended_only: bool = True
) -> list[dt.date]:
    """The dates to close, oldest first, for `eod run [--date requested]`.

    Without a date: every open date, then every business date that has ended by the
    wall clock (`today` is the date now running), at most CATCH_UP_DAYS_MAX. A date
    asked for that the clock has not ended is refused (`ended_only`, production): an
    early close would date the rest of the day's traffic the next day. Dev and test
    move their dates by hand and may close any date that has begun."""
    if requested is None:
        wanted = list(calendar.open_dates)
        day = calendar.business_date
        while day < today and len(wanted) < CATCH_UP_DAYS_MAX:
            wanted.append(day)
            day += ONE_DAY
        return sorted(set(wanted))
    if requested > calendar.business_date:
        raise DayRefused(
            f"{requested} has not begun: the business date is {calendar.business_date}"
        )
    if ended_only and requested >= today and requested not in calendar.open_dates:
        raise DayRefused(
            f"{requested} has not ended: it closes after its cut-off, on the next calendar "
            "day (Asia/Shanghai); the scheduler closes it then"
        )
    if calendar.last_finished is not None and requested < calendar.last_finished:
        raise DayRefused(
            f"{requested} is before {calendar.last_finished}, the last date closed: "
            "a closed day is not run again"
        )
    if calendar.last_finished == requested:
        return []  # finished: nothing to do
    earlier = [d for d in calendar.open_dates if d < requested]
    if earlier:
        raise DayRefused(
            f"{earlier[0]} is still open: close it first (`eod run --date {earlier[0]}`, "
            "or `eod run` to close every open date in order)"
        )
    return [requested]


def shard_lag_days(calendar: Calendar, ended: dt.date, finished_oldest_open: bool) -> int:
    """How many business dates that have ended by the wall clock (through `ended`) a
    shard has not closed: 0 on time, 1 while last night's run is under way or has
    just failed, more when it has been failing or not running since. Counted against
    the clock, not the business date: a run stops at the first date it cannot close,
    so a shard down for a week holds the business date too (and would look one day
    behind). `finished_oldest_open`: the shard closed the oldest open date (the others
    did not)."""
    if finished_oldest_open and calendar.open_dates:
        last = calendar.open_dates[0]
    elif calendar.last_finished is not None:
        last = calendar.last_finished
    else:  # nothing closed yet: the dates before the first business date need nothing
        first = calendar.open_dates[0] if calendar.open_dates else calendar.business_date
        last = first - ONE_DAY
    return max(0, (ended - last).days)


async def cut_over(conn: asyncpg.Connection, day: dt.date, settle_s: float) -> float:
    """Move the business date from `day` to the next, once; record `day` as cut over.
    Returns how long to wait still, from now, until `settle_s` after the business date
    moved to the day after `day` (now, or a moment ago by another runner): by then every
    engine dates its transactions the next day. Nothing to wait for a past date."""
    async with conn.transaction():
        current = await conn.fetchval("SELECT business_date FROM business_clock FOR UPDATE")
        if current < day:
            raise DayRefused(f"{day} has not begun: the business date is {current}")
        if current == day:
            await conn.execute(
                "UPDATE business_clock SET business_date = $1, updated_at = now()", day + ONE_DAY
            )
        await conn.execute(
            "INSERT INTO eod_day (business_date) VALUES ($1) ON CONFLICT DO NOTHING", day
        )
        since_s = await conn.fetchval(
            """SELECT extract(epoch FROM now() - updated_at) FROM business_clock
               WHERE business_date = $1""",
            day + ONE_DAY,
        )
    return 0.0 if since_s is None else max(0.0, settle_s - float(since_s))


async def mark_finished(conn: asyncpg.Connection, day: dt.date) -> None:
    await conn.execute(
        "UPDATE eod_day SET finished_at = now() WHERE business_date = $1 AND finished_at IS NULL",
        day,
    )

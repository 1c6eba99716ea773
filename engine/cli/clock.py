"""`python -m engine clock show | set YYYY-MM-DD`: the one business date.

Setting it by hand is for the local stack and tests only (ENGINE_ENV dev or
test); in production the day-end batch advances it. Setting it back to or before
a date the day-end has closed drops the day-end's records of those dates (control
database and shards), so that it closes them again. Engines see a change
within `reference_refresh_s` seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from engine.cli.admin_common import run_on_control


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("clock", help="show or (dev/test) set the business date")
    parser.add_argument("action", choices=["show", "set"])
    parser.add_argument("date", nargs="?", type=dt.date.fromisoformat)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.stores.control_admin import forget_day_ends_from, set_business_date

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        if args.action == "set":
            if settings.env not in ("dev", "test"):
                print(
                    "clock: refused: the business date is set by hand only in dev or test",
                    file=sys.stderr,
                )
                return 1
            if args.date is None:
                print("clock: set needs a date YYYY-MM-DD", file=sys.stderr)
                return 2
            await set_business_date(conn, args.date)
            forgotten = await forget_day_ends_from(conn, settings, args.date)
            if forgotten:
                print(
                    f"clock: the day-end's records of {forgotten} dates from {args.date} on "
                    "were dropped: it closes them again from the books as they stand",
                    file=sys.stderr,
                )
        print(await conn.fetchval("SELECT business_date FROM business_clock"))
        return 0

    return run_on_control(work)

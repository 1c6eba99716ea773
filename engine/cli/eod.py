"""`python -m engine eod run [--date D] | status | schedule`: the day-end batch.

run       close the business date(s) due (see engine.eod.days): exit 0 when every
          date asked for is closed, 1 when a shard could not finish (the date stays
          open; run again), 2 when the date is refused (the reason on stderr)
status    the business date, the last date closed, what is open, each shard's steps
schedule  the scheduler process (make up starts it)
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("eod", help="the day-end batch: run, status, schedule")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="close the business date(s) due")
    run_parser.add_argument(
        "--date", type=dt.date.fromisoformat, help="the business date to close (YYYY-MM-DD)"
    )
    run_parser.add_argument("--quiet", action="store_true", help="no progress line")
    actions.add_parser("status", help="each shard's progress")
    actions.add_parser("schedule", help="run the day-end on its schedule (a process)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvloop

    from engine.runtime.logs import setup_logging
    from engine.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    if args.action == "status":
        return uvloop.run(_status(settings))
    from engine.runtime.priority import lower_process

    lower_process(settings.eod.nice)  # online work on this host is served first
    if args.action == "schedule":
        from engine.eod.scheduler import run_scheduler

        uvloop.run(run_scheduler(settings))
        return 0
    return uvloop.run(_run(settings, args.date, show=not args.quiet and sys.stderr.isatty()))


async def _run(settings: Any, requested: dt.date | None, *, show: bool) -> int:
    from engine.eod.days import DayRefused
    from engine.eod.runner import describe
    from engine.eod.setup import eod_runner

    bar = _ProgressLine() if show else None
    async with eod_runner(settings, "eod-run") as runner:
        try:
            outcomes = await runner.run(requested, bar.update if bar else None)
        except DayRefused as exc:
            print(f"eod: refused: {exc}", file=sys.stderr)
            return 2
    if bar is not None:
        bar.done()
    if not outcomes:
        print("eod: nothing to close")
        return 0
    for line in describe(outcomes):
        print(line)
    return 0 if all(o.closed for o in outcomes) else 1


async def _status(settings: Any) -> int:
    from engine.eod.runner import STEP_NAMES
    from engine.eod.setup import eod_runner

    async with eod_runner(settings, "eod-status") as runner:
        calendar = await runner.calendar()
        shards = await runner.shard_progress()
    print(f"business date  {calendar.business_date}")
    print(f"last closed    {calendar.last_finished or '-'}")
    print(f"open           {', '.join(map(str, calendar.open_dates)) or '-'}")
    healthy = True
    for shard, steps in shards.items():
        if isinstance(steps, str):
            print(f"{shard}: {steps}")
            healthy = False
            continue
        cells = []
        for name in STEP_NAMES:
            checkpoint = steps.get(name)
            if checkpoint is None:
                cells.append(f"{name} -")
            else:
                mark = "done" if checkpoint.finished else f"at {checkpoint.last_key}"
                cells.append(f"{name} {checkpoint.rows_done:,} {mark}")
        print(f"{shard}: " + " | ".join(cells))
    return 0 if healthy else 1


class _ProgressLine:
    """One line on the terminal, rewritten in place: each shard's step and rows done."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[str, int]] = {}

    def update(self, shard: str, step: str, rows: int) -> None:
        self._state[shard] = (step, rows)
        text = "  ".join(f"{s} {st} {n:,}" for s, (st, n) in sorted(self._state.items()))
        sys.stderr.write("\r\033[K" + text[:200])
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")

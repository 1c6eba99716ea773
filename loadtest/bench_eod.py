"""The day-end over the seeded loans while online traffic runs, in one run.

    .venv/bin/python -m loadtest.bench_eod [--seconds 20] [--append]

    0. wait (up to 5 min) for the relay to finish what a previous run left in the outbox
    1. drawdowns and repayments at saturation (closed loops, `--seconds` each; skipped
       with `--rates D,R`, which sets step 2's rates: the same load for two runs)
    2. both at once, each at a quarter of its saturated rate (half the machine), open
       loops, `--seconds`, no day-end: the online p99 without it
    3. the same open loops again while `python -m engine eod run` closes the business
       date (the cut-over, then every step on every shard at once): the online p99
       during it, the day-end's wall time, and each shard's rows and time per step
       (from its checkpoints)
    4. once the relay has carried out what the day-end left and autovacuum has done
       with its changes (each wait bounded), the open loops of step 2 again: the p99
       without the day-end is that of steps 2 and 4 together (one window of 20 s on a
       shared machine swung from 37 to 492 ms between runs; its two halves are shown)

Prints a markdown table (loans/s in all and per shard, the projection to 20,000,000
loans on 4 shards, the two p99s and their ratio, against the issue's targets: 10
minutes, at most 2×); with `--append` adds it to BENCHMARKS.md. Needs `make up` and
seeded customers (`make bench-eod` seeds the bench-scale 1,000,000 × 4 first). The
scheduler of `make up` is stopped for the run (a second runner would take shards
from this one) and started again afterwards. Talks to the engine over HTTP and runs
the day-end as its command: no engine code is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Final

import asyncpg

from loadtest.bench_api import (
    ROOT,
    Client,
    Tally,
    append_to_benchmarks,
    closed_loop,
    drawdown_maker,
    open_loop,
    repayment_maker,
    say,
)
from loadtest.client_data import SeededCustomer, read_seeded, seeded_file_path
from loadtest.cpu_share import command_cpu_s, cpu_spent, priorities_of, process_cpu_s
from loadtest.seed import control_dsn_from_env, shards_from_env

TARGET_MINUTES_20M: Final = 10.0
TARGET_P99_RATIO: Final = 2.0
PROJECTED_LOANS: Final = 20_000_000
BATCH_RELAY: Final = "engine relay --lane batch"  # the day-end's outbox rows (ledger 0025)
SEEDED_READ_MAX: Final = 200_000


@dataclass
class StepStats:
    shard: str
    step: str
    rows: int
    seconds: float


@dataclass
class Run:
    business_date: dt.date
    wall_s: float
    returncode: int
    steps: list[StepStats]
    before_draw: Tally
    before_pay: Tally
    during_draw: Tally
    during_pay: Tally
    after_draw: Tally  # the loops again after the day-end and its aftermath
    after_pay: Tally
    draw_rate: float
    pay_rate: float
    governor_ms: float  # the governor's p99 target given to the day-end (0: none)
    online_cpu_s: dict[str, float]  # CPU by role while only the online loops ran
    online_s: float  # how long they ran
    during_cpu_s: dict[str, float]  # CPU by role while the day-end ran beside them
    # CPU of the day-end's own database backends, by whose they are: its runner's shard
    # leases (`eod`) and the batch relay's connections (`relay:batch`), and of the
    # batch relay's process (the day-end's debits, their completions and SMS).
    backends_cpu_s: dict[str, float]
    relay_batch_cpu_s: float
    relay_priority: str  # the relay's nice during the run (ENGINE_RELAY_NICE when started)


async def _business_date() -> dt.date:
    conn = await asyncpg.connect(control_dsn_from_env(os.environ), timeout=10)
    try:
        value = await conn.fetchval("SELECT business_date FROM business_clock")
    finally:
        await conn.close()
    assert isinstance(value, dt.date)
    return value


async def _steps(day: dt.date) -> list[StepStats]:
    out = []
    for shard in shards_from_env(os.environ):
        conn = await asyncpg.connect(shard.dsn, timeout=10)
        try:
            rows = await conn.fetch(
                """SELECT step, rows_done, extract(epoch FROM finished_at - started_at) AS s
                   FROM eod_progress WHERE business_date = $1 ORDER BY started_at""",
                day,
            )
        finally:
            await conn.close()
        out += [StepStats(shard.name, r["step"], r["rows_done"], float(r["s"] or 0)) for r in rows]
    return out


BACKLOG_WAIT_S = 300.0


async def _relay_backlog() -> int:
    """Outbox rows not finished on every shard (a previous day-end's debits and SMS)."""
    total = 0
    for shard in shards_from_env(os.environ):
        conn = await asyncpg.connect(shard.dsn, timeout=10)
        try:
            total += int(await conn.fetchval("SELECT count(*) FROM outbox WHERE done_at IS NULL"))
        finally:
            await conn.close()
    return total


async def quiet_relay() -> None:
    """Wait (at most BACKLOG_WAIT_S) for the relay to finish what a previous run left:
    measured beside it, the p99 "without the day-end" would carry that run's cost."""
    waited = 0.0
    while (backlog := await _relay_backlog()) and waited < BACKLOG_WAIT_S:
        if waited % 30 == 0:
            say(f"waiting for the relay's backlog: {backlog} outbox rows open")
        await asyncio.sleep(5.0)
        waited += 5.0


async def loops_until(
    client: Client,
    customers: list[SeededCustomer],
    rates: tuple[float, float],
    done: asyncio.Event | None,
    seconds: float,
) -> tuple[Tally, Tally]:
    """Drawdowns and repayments at `rates` in windows of `seconds`, once, or until `done`."""
    draw_all, pay_all = Tally(), Tally()
    window = 0
    while True:
        sample = customers[window % 2 :: 2][::-1]
        draw, pay = await asyncio.gather(
            open_loop(client, drawdown_maker(sample, 1), rates[0], seconds),
            open_loop(client, repayment_maker(sample, 1), rates[1], seconds),
        )
        for total, part in ((draw_all, draw), (pay_all, pay)):
            total.latencies_s += part.latencies_s
            total.errors += part.errors
            total.late += part.late
            total.window_s += part.window_s
            for code, n in part.refused.items():
                total.refused[code] = total.refused.get(code, 0) + n
        window += 1
        if done is None or done.is_set():
            return draw_all, pay_all


async def run(args: argparse.Namespace, customers: list[SeededCustomer]) -> Run:
    client = Client(args.base_url)
    try:
        await quiet_relay()
        if args.rates:  # the same online load as another run, for a fair pair
            rates = args.rates
        else:
            say(f"drawdowns and repayments at saturation, {args.seconds} s each")
            draw = await closed_loop(client, drawdown_maker(customers, 32), 32, args.seconds, 2.0)
            pay = await closed_loop(client, repayment_maker(customers, 32), 32, args.seconds, 2.0)
            # Half the machine: drawdowns at a quarter of their saturated rate and
            # repayments at a quarter of theirs, at once (each alone at half would be all).
            rates = (max(draw.per_s / 4, 1.0), max(pay.per_s / 4, 1.0))
        say(f"open loops: {rates[0]:.0f} drawdowns/s, {rates[1]:.0f} repayments/s, no day-end")
        async with cpu_spent() as online_cpu:
            began = time.perf_counter()
            before = await loops_until(client, customers, rates, None, args.seconds)
            online_s = time.perf_counter() - began
        env = dict(os.environ)
        governor_ms = 0.0
        if args.governed:  # the target: a multiple of the p99 just measured, both kinds
            # together as the governor reads them
            quiet_ms = Tally([s for t in before for s in t.latencies_s]).percentile_ms(0.99)
            governor_ms = round(args.governed * quiet_ms, 1)
            env["ENGINE_EOD_ONLINE_P99_MS"] = str(governor_ms)
        day = await _business_date()
        say(f"the day-end of {day}, with the same open loops (governor: {governor_ms} ms)")
        done = asyncio.Event()
        started = time.perf_counter()
        # In a session of its own, as the scheduler of `make up` runs it (under setsid):
        # it then lowers its session's autogroup, which is what the kernel weighs
        # against the engines' sessions (engine/runtime/priority.py).
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "eod", "run", "--date", str(day), "--quiet",
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip

        async def wait_eod() -> int:
            code = await proc.wait()
            done.set()
            return code

        backends = EodBackends()
        relay_batch_before = command_cpu_s(BATCH_RELAY)
        try:
            async with cpu_spent() as during_cpu:
                returncode, during, _ = await asyncio.gather(
                    wait_eod(),
                    loops_until(client, customers, rates, done, 10.0),
                    backends.follow(done),
                )
        finally:
            if proc.returncode is None:  # the bench stopped: no day-end left behind it
                proc.terminate()
                await proc.wait()
        wall_s = time.perf_counter() - started
        relay_batch_s = command_cpu_s(BATCH_RELAY) - relay_batch_before
        await quiet_relay()
        await _quiet_autovacuum()
        say("the same open loops again, after the day-end")
        after = await loops_until(client, customers, rates, None, args.seconds)
    finally:
        client.http.close()
    return Run(
        day, wall_s, returncode, await _steps(day), *before, *during, *after, *rates, governor_ms,
        online_cpu, online_s, during_cpu, backends.cpu_s(), relay_batch_s,
        priorities_of("relay"),
    )  # fmt: skip


def _pooled(*tallies: Tally) -> Tally:
    return Tally([s for t in tallies for s in t.latencies_s])


AUTOVACUUM_WAIT_S = 120.0


async def _quiet_autovacuum() -> None:
    """Wait (at most AUTOVACUUM_WAIT_S) until no autovacuum worker runs on any server
    twice in a row: the day-end's changes are vacuumed and analyzed after it, and that
    belongs to neither window without it."""
    servers = {shard.dsn.rsplit("/", 1)[0]: shard.dsn for shard in shards_from_env(os.environ)}
    quiet, waited = 0, 0.0
    while quiet < 2 and waited < AUTOVACUUM_WAIT_S:
        busy = 0
        for dsn in servers.values():
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
                try:
                    busy += int(
                        await conn.fetchval(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE backend_type = 'autovacuum worker'"
                        )
                    )
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError):  # the run's figures matter more
                say("autovacuum unreadable: measuring without waiting for it")
                return
        quiet = quiet + 1 if busy == 0 else 0
        await asyncio.sleep(2.0)
        waited += 2.0


def table(result: Run) -> str:
    accrual = [s for s in result.steps if s.step == "accrual"]
    loans = sum(s.rows for s in accrual)
    per_shard = [s.rows / s.seconds for s in accrual if s.seconds]
    total_rate = loans / result.wall_s if result.wall_s else 0.0
    by_shard: dict[str, float] = {}
    for s in result.steps:
        by_shard[s.shard] = by_shard.get(s.shard, 0.0) + s.seconds
    steps_s = max(by_shard.values(), default=0.0)
    minutes_20m = PROJECTED_LOANS / total_rate / 60 if total_rate else float("inf")
    # The cut-over (and its settle) costs the same for any book; the steps grow with it.
    scaled_min = (
        (result.wall_s - steps_s + steps_s * PROJECTED_LOANS / loans) / 60 if loans else 0.0
    )
    without_draw = _pooled(result.before_draw, result.after_draw)
    without_pay = _pooled(result.before_pay, result.after_pay)
    p99 = [t.percentile_ms(0.99) for t in (without_draw, result.during_draw,
                                            without_pay, result.during_pay)]  # fmt: skip
    halves = [
        f"{t.percentile_ms(0.99):.1f}"
        for t in (result.before_draw, result.after_draw, result.before_pay, result.after_pay)
    ]
    ratios = [p99[1] / p99[0] if p99[0] else 0.0, p99[3] / p99[2] if p99[2] else 0.0]
    verdict_time = "met" if minutes_20m <= TARGET_MINUTES_20M else "MISSED"
    verdict_p99 = "met" if max(ratios) <= TARGET_P99_RATIO else "MISSED"
    pacing = ", ".join(
        f"{name}={os.environ[name]}"
        for name in sorted(os.environ)
        if name.startswith("ENGINE_EOD_")
    )
    cpu_rows = _cpu_rows(result, loans)
    rows = [
        "| measure | value | target |",
        "|---|---:|---|",
        f"| business date closed | {result.business_date} (exit {result.returncode}) | |",
        f"| day-end settings from the environment | {pacing or 'the defaults'} | |",
        f"| the relay's CPU priority (ENGINE_RELAY_NICE of `make up`) | "
        f"{result.relay_priority} | |",
        f"| governor's online p99 target (--governed) | "
        f"{f'{result.governor_ms:.1f} ms' if result.governor_ms else 'none'} | |",
        f"| loans accrued | {loans:,} | |",
        f"| day-end wall time (cut-over and its 5 s settle included) | {result.wall_s:,.1f} s | |",
        f"| loans/s in all (4 shards on this 2-core machine) | {total_rate:,.0f} | |",
        f"| steps' time (the slowest shard, cut-over excluded) | {steps_s:,.1f} s | |",
        f"| accrual loans/s per shard (each, all at once) | "
        f"{', '.join(f'{r:,.0f}' for r in per_shard)} | >= 8,400 |",
        f"| projected: 20,000,000 loans at the rate in all | {minutes_20m:,.1f} min | "
        f"<= {TARGET_MINUTES_20M:.0f} min {verdict_time} |",
        f"| projected: the cut-over as measured, the steps' time scaled to 20,000,000 loans | "
        f"{scaled_min:,.1f} min | |",
        f"| drawdown p99 without (before and after, pooled) / during the day-end "
        f"({result.draw_rate:.0f}/s) | "
        f"{p99[0]:.1f} / {p99[1]:.1f} ms ({ratios[0]:.2f}x) | <= {TARGET_P99_RATIO:.0f}x "
        f"{verdict_p99} |",
        f"| repayment p99 without / during ({result.pay_rate:.0f}/s) | "
        f"{p99[2]:.1f} / {p99[3]:.1f} ms ({ratios[1]:.2f}x) | |",
        f"| online problems during | drawdowns: {result.during_draw.problems()}; repayments: "
        f"{result.during_pay.problems()} | none |",
        f"| p99 without, before / after the day-end: drawdowns; repayments | "
        f"{halves[0]} / {halves[1]} ms; {halves[2]} / {halves[3]} ms | |",
        *cpu_rows,
    ]
    steps = ["", "| shard | step | rows | seconds | rows/s |", "|---|---|---:|---:|---:|"]
    steps += [
        f"| {s.shard} | {s.step} | {s.rows:,} | {s.seconds:,.1f} | "
        f"{(s.rows / s.seconds if s.seconds else 0):,.0f} |"
        for s in result.steps
    ]
    return "\n".join(rows + steps)


class EodBackends:
    """The CPU of the day-end's database backends: the connection each shard's runner
    holds its lease on (application_name `eod:<shard>`) and the batch relay's
    (`relay:batch`), found in pg_stat_activity and read from /proc every second until
    the run ends (same machine only)."""

    def __init__(self) -> None:
        # pid -> (owner, CPU when first seen, CPU when last seen)
        self._seen: dict[int, tuple[str, float, float]] = {}

    async def follow(self, done: asyncio.Event) -> None:
        # One connection per server for the whole run: a new one every second would
        # fork a backend a second on the machine being measured.
        servers = {shard.dsn.rsplit("/", 1)[0]: shard.dsn for shard in shards_from_env(os.environ)}
        conns: dict[str, asyncpg.Connection] = {}
        try:
            while not done.is_set():
                for server, dsn in servers.items():
                    try:
                        if server not in conns:
                            conns[server] = await asyncpg.connect(dsn, timeout=5)
                        pids = await conns[server].fetch(
                            """SELECT pid, split_part(application_name, ':', 1) AS owner
                               FROM pg_stat_activity
                               WHERE application_name LIKE 'eod:%'
                                  OR application_name = 'relay:batch'"""
                        )
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        stale = conns.pop(server, None)
                        if stale is not None:
                            stale.terminate()
                        continue
                    for pid, owner in pids:
                        spent = process_cpu_s(pid)
                        if spent is not None:
                            first = self._seen.get(pid, (owner, spent, spent))[1]
                            self._seen[pid] = (owner, first, spent)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 1.0)
        finally:
            for conn in conns.values():
                await conn.close()

    def cpu_s(self) -> dict[str, float]:
        """Seconds of CPU by owner: "eod" (the runner's backends, opened by the run: all
        of theirs) and "relay" (the batch relay's, older than the run: what they used
        since first seen; one opened meanwhile may have used up to a second unseen)."""
        spent = {"eod": 0.0, "relay": 0.0}
        for owner, first, last in self._seen.values():
            spent[owner] += last if owner == "eod" else last - first
        return spent


def _cpu_rows(result: Run, loans: int) -> list[str]:
    """The day-end's own CPU, measured, not inferred: its runner process and its shard
    leases' backends (accrual, the deduction's openings, the rest), and the batch relay
    with its backends (the auto-debits' sending, completion and merged SMS: the rows of
    the day-end's lane, ledger 0025); per loan of the book, and the cores that closing
    20,000,000 loans in 10 minutes would take at that cost. The fakes' CPU is not in
    it: core banking and the SMS gateway run elsewhere."""
    if not result.online_cpu_s or not result.during_cpu_s or not loans or not result.online_s:
        return []

    def ours(spent: dict[str, float]) -> float:
        return sum(s for role, s in spent.items() if role != "other")

    runner_s = result.during_cpu_s["eod"]
    runner_backends_s = result.backends_cpu_s.get("eod", 0.0)
    relay_s, relay_backends_s = result.relay_batch_cpu_s, result.backends_cpu_s.get("relay", 0.0)
    own_s = runner_s + runner_backends_s + relay_s + relay_backends_s
    per_loan_us = own_s / loans * 1e6
    cores = PROJECTED_LOANS * per_loan_us / 1e6 / (TARGET_MINUTES_20M * 60)
    roles = ", ".join(
        f"{role} {result.during_cpu_s[role]:,.0f}"
        for role in ("postgres", "eod", "engine", "relay", "fakes")
    )
    return [
        f"| CPU of this stack: online loops alone / with the day-end | "
        f"{ours(result.online_cpu_s) / result.online_s:.2f} / "
        f"{ours(result.during_cpu_s) / result.wall_s:.2f} cores | |",
        f"| CPU by role during the day-end (s) | {roles} | |",
        f"| the day-end's own CPU: runner / its shard backends; batch relay / its backends | "
        f"{runner_s:,.0f} s / {runner_backends_s:,.0f} s; {relay_s:,.0f} s / "
        f"{relay_backends_s:,.0f} s | |",
        f"| the day-end's CPU per loan of the book (all steps, its relay's work included) | "
        f"{per_loan_us:,.0f} µs | |",
        f"| cores to close 20,000,000 loans in 10 min at that cost | {cores:,.1f} | |",
        f"| cores the online loops left the day-end here | "
        f"{max(0.0, (os.cpu_count() or 1) - ours(result.online_cpu_s) / result.online_s):.2f}"
        " | |",
    ]


def _scheduler(action: str) -> None:
    subprocess.run([str(ROOT / "ops" / "engine.sh"), action, "eod"], check=False, cwd=ROOT)


def day_end_can_start() -> str | None:
    """Why `python -m engine eod` cannot run here (its own message), or None. Asked before
    the minutes of load: a day-end refused at its start (say ENGINE_ENV unset, which means
    prod and wants keys) would otherwise leave a run with nothing to measure."""
    done = subprocess.run(
        [sys.executable, "-m", "engine", "eod", "status"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def _rates(text: str) -> tuple[float, float]:
    try:
        draw, pay = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected two rates: DRAWDOWNS,REPAYMENTS") from None
    if not (0 < draw <= 10_000 and 0 < pay <= 10_000):
        raise argparse.ArgumentTypeError("each rate must be in (0, 10000] per second")
    return draw, pay


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_eod", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--append", action="store_true", help="append to BENCHMARKS.md")
    parser.add_argument(
        "--base-url", default=f"http://127.0.0.1:{os.environ.get('ENGINE_HTTP_PORT', '8080')}"
    )
    parser.add_argument("--label", default="", help="a line above the table")
    parser.add_argument(
        "--rates",
        type=_rates,
        default=None,
        metavar="DRAWDOWNS,REPAYMENTS",
        help="the open loops' rates per second, instead of a quarter of each saturated "
        "rate measured first (the saturation varies from run to run: fix it to compare two)",
    )
    parser.add_argument(
        "--governed",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="run the day-end with its governor, targeting RATIO x the online p99 (drawdowns "
        "and repayments together) measured without it (engine/eod/governor.py); default: none",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    customers = read_seeded(seeded_file_path(), SEEDED_READ_MAX)
    if not customers:
        print("bench_eod: no seeded customers: run `make seed` first", file=sys.stderr)
        return 2
    if (why := day_end_can_start()) is not None:
        print(f"bench_eod: the day-end cannot run: {why}", file=sys.stderr)
        return 2
    _scheduler("stop")
    try:
        result = asyncio.run(run(args, customers))
    finally:
        _scheduler("start")
    text = table(result)
    print(text)
    if result.returncode != 0:  # its figures measure nothing: never on the record
        print(f"bench_eod: the day-end exited {result.returncode}: not appended", file=sys.stderr)
        return 1
    if args.append:
        append_to_benchmarks(
            text,
            args,
            control_dsn_from_env(os.environ),
            title="Day-end while online",
            module="loadtest.bench_eod",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

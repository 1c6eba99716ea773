"""The engine's API against this machine's PostgreSQL, in one run, all processes together.

    .venv/bin/python -m loadtest.bench_api [--concurrency 32,64,128] [--seconds 20] [--append]

    1. pgbench TPC-B on the stack's own PostgreSQL (server 0): a `pgbench` database,
       scale 10, 4, 8 and 16 clients, 2 threads, 30 s each; the best
       count again after step 6, and the mean of the two           -> the baseline tps
    2. drawdowns at saturation: a closed loop of C requests in flight for each C of
       `--concurrency`, each a new Idempotency-Key, spread over the seeded lines so
       that no two in flight share a line (line locks would serialize them); the
       best C's rate is saturation                                   -> drawdowns/s
    3. drawdowns at half that rate, open loop (sent on a fixed schedule; latency
       counted from the scheduled moment, so a slow engine cannot slow the
       client down and hide its own queueing)                        -> p50, p99
    4. repayments at saturation: the closed loops again, each a prepayment of
       1.00 on a seeded loan                                         -> repayments/s
    5. repayments at half that rate, open loop                       -> p50, p99
    6. repayment day: 70 % repayments, 30 % drawdowns, at saturation (the repayments'
       best C in flight)                                            -> requests/s, p99 each

Saturation is the best rate over several in-flight counts, for pgbench as for us: a
system's saturated throughput is the top of its throughput curve, and the curves peak
at different counts (pgbench at about 8 clients on two cores; the engine, whose group
calls grow with the queue, at 64-128).

Prints a markdown table with the ratios to the pgbench baseline and the issue's
targets (issue 20: drawdowns/s >= 0.35 x tps, repayments/s >= 0.25 x; p99 at half
saturation <= 50 ms for both) and the CPU each process role spent per drawdown and per
repayment at saturation (`loadtest.cpu_share`); with
`--append`, appends it to BENCHMARKS.md with the machine, versions and command.
Needs the engine serving (`make up`, or ENGINE_HTTP_PORT) and seeded customers
(`python -m loadtest seed`; LOADTEST_SEEDED names the file). The client is one
asyncio process (uvloop, `loadtest.lean_http`, one keep-alive connection per
request in flight): Locust, or even aiohttp's client, would take the CPU for
itself. It imports no engine code.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import asyncpg

from loadtest.client_data import SeededCustomer, read_seeded, seeded_file_path
from loadtest.cpu_share import cpu_by_role, per_operation_ms
from loadtest.histogram_scrape import HistogramReading, scrape
from loadtest.lean_http import HttpError, LeanHttp
from loadtest.seed import control_dsn_from_env, shards_from_env
from loadtest.signing import auth_headers

ROOT: Final = Path(__file__).resolve().parent.parent
CHANNEL_ID: Final = "demo"
CHANNEL_SECRET: Final = "demo-secret"  # the local stack's published demo secret (API.md)
DRAWDOWN_AMOUNT: Final = "100.00"
PREPAY_AMOUNT: Final = "1.00"
REQUEST_TIMEOUT_S: Final = 10.0
IN_FLIGHT_MAX: Final = 1024  # the open loop never holds more requests than this
DISBURSED: Final = "disbursement_latency_seconds"  # the relay's: request to core's payment
MONEY_SETTLE_S: Final = 1.0  # after an open loop, before reading what the relay paid
TARGET_DRAWDOWN_RATIO: Final = 0.35  # issue 20 (0.25 before it)
TARGET_P99_MS: Final = 50.0  # issue 20 (100 ms before it)
TARGET_REPAYMENT_RATIO: Final = 0.25  # issue 20: repayments/s against pgbench tps
PGBENCH_DATABASE: Final = "pgbench"
SEEDED_READ_MAX: Final = 200_000

Maker = Callable[[int, int], tuple[str, bytes]]  # (worker, n) -> (path, body)
T = TypeVar("T")


@dataclass
class Tally:
    """Outcomes of one loop: latencies of the successes, counts of the rest."""

    latencies_s: list[float] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    late: int = 0
    window_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def per_s(self) -> float:
        return self.ok / self.window_s if self.window_s else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1  # nearest rank
        return ordered[rank] * 1000

    def problems(self) -> str:
        parts = [f"{n} x {code}" for code, n in sorted(self.refused.items())]
        if self.errors:
            parts.append(f"{self.errors} errors")
        if self.late:
            parts.append(f"{self.late} not sent (in-flight cap)")
        return ", ".join(parts) or "none"


class Client:
    """Signs and posts over keep-alive connections (`loadtest.lean_http`)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"the benchmark client speaks http://host:port only, not {base_url}")
        self.http = LeanHttp(parts.hostname, parts.port, REQUEST_TIMEOUT_S)
        self._key = 0
        self._run = os.urandom(6).hex()

    async def post(self, path: str, body: bytes, tally: Tally | None, sent_s: float) -> None:
        """One POST; its outcome goes to `tally` (None: warm-up, not counted)."""
        self._key += 1
        key = f"bench-{self._run}-{self._key}"
        headers = auth_headers(CHANNEL_ID, CHANNEL_SECRET, "POST", path, body, idempotency_key=key)
        headers["Content-Type"] = "application/json"
        try:
            status, payload = await self.http.post(path, headers, body)
        except (HttpError, OSError, TimeoutError):
            if tally is not None:
                tally.errors += 1
            return
        if tally is None:
            return
        if status == 201:
            tally.latencies_s.append(time.perf_counter() - sent_s)
        elif status == 422:
            code = str(json.loads(payload).get("code"))
            tally.refused[code] = tally.refused.get(code, 0) + 1
        else:
            tally.errors += 1


async def closed_loop(
    client: Client, make: Maker, concurrency: int, seconds: float, warmup_s: float
) -> Tally:
    """`concurrency` requests always in flight; counts those started after the warm-up."""
    tally = Tally()
    began = time.perf_counter()
    measure_from = began + warmup_s
    end = measure_from + seconds

    async def worker(w: int) -> None:
        n = 0
        while (now := time.perf_counter()) < end:
            path, body = make(w, n)
            n += 1
            await client.post(path, body, tally if now >= measure_from else None, now)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    tally.window_s = time.perf_counter() - measure_from
    return tally


async def open_loop(client: Client, make: Maker, rate_per_s: float, seconds: float) -> Tally:
    """Requests sent on a fixed schedule of `rate_per_s`; latency from the scheduled moment."""
    assert rate_per_s > 0
    tally = Tally()
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    count = int(rate_per_s * seconds)
    for n in range(count):
        due = start + n / rate_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= IN_FLIGHT_MAX:
            tally.late += 1
            continue
        path, body = make(0, n)
        task = asyncio.create_task(client.post(path, body, tally, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    tally.window_s = seconds
    return tally


def drawdown_maker(customers: list[SeededCustomer], concurrency: int) -> Maker:
    """Worker w's n-th drawdown goes to line (w + n * concurrency) mod lines."""
    bodies = [
        json.dumps(
            {
                "credit_line_id": c.credit_line_id,
                "amount": DRAWDOWN_AMOUNT,
                "term_months": 12,
                "repayment_method": "equal_installment",
                "disburse_to": c.bank_card,
            }
        ).encode()
        for c in customers
    ]

    def make(worker: int, n: int) -> tuple[str, bytes]:
        return "/v1/drawdowns", bodies[(worker + n * concurrency) % len(bodies)]

    return make


def repayment_maker(customers: list[SeededCustomer], concurrency: int) -> Maker:
    """Worker w's n-th repayment prepays 1.00 of a loan of customer (w + n * concurrency),
    one with no installment due on the seeding's date (a channel shows the customer what
    is due first; the prepayment would be refused ARREARS_FIRST)."""

    def make(worker: int, n: int) -> tuple[str, bytes]:
        customer = customers[(worker + n * concurrency) % len(customers)]
        payable = customer.not_due_today()
        loan_id = payable[n % len(payable)]
        body = {
            "customer_id": customer.customer_id,
            "items": [{"loan_id": loan_id, "mode": "prepay", "amount": PREPAY_AMOUNT}],
            "debit_from": customer.bank_card,
        }
        return "/v1/repayments", json.dumps(body).encode()

    return make


# --- pgbench --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgbenchSetup:
    host: str
    port: int
    scale: int
    clients: int
    threads: int
    seconds: int

    def command(self) -> list[str]:
        return [
            _pgbench_binary(), "-h", self.host, "-p", str(self.port), "-U", "postgres",
            "-c", str(self.clients), "-j", str(self.threads), "-T", str(self.seconds),
            PGBENCH_DATABASE,
        ]  # fmt: skip


def _pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    if not candidates:
        raise SystemExit("bench: pgbench not found (Debian package postgresql-client)")
    return str(candidates[-1])


async def _ensure_database(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", "pgbench")
        if not exists:
            await conn.execute(f"CREATE DATABASE {PGBENCH_DATABASE}")
    finally:
        await conn.close()


def run_pgbench(setup: PgbenchSetup) -> float:
    """Initializes the pgbench database (scale `setup.scale`) and returns the TPC-B tps."""
    base = [_pgbench_binary(), "-h", setup.host, "-p", str(setup.port), "-U", "postgres"]
    subprocess.run(
        [*base, "-i", "-q", "-s", str(setup.scale), PGBENCH_DATABASE],
        check=True,
        capture_output=True,
        timeout=600,
    )
    done = subprocess.run(
        setup.command(), check=True, capture_output=True, text=True, timeout=setup.seconds + 120
    )
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if match is None:
        raise SystemExit(f"bench: cannot read tps from pgbench:\n{done.stdout}")
    return float(match.group(1))


# --- The run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """Closed loops at several in-flight counts: each count's rate, and the best."""

    points: dict[int, float]  # in flight -> requests/s
    best: Tally
    best_concurrency: int
    cpu_ms: dict[str, float]  # by role (loadtest.cpu_share), at the best count

    def describe(self, unit: str) -> str:
        return ", ".join(f"{c}: {rate:,.0f}" for c, rate in self.points.items()) + f" {unit}/s"


async def measured_loop(
    client: Client, make: Maker, concurrency: int, args: argparse.Namespace
) -> tuple[Tally, dict[str, float]]:
    """A warm-up, then a closed loop of `--seconds`: its outcomes and each role's CPU
    per request."""
    await closed_loop(client, make, concurrency, 0.0, args.warmup_s)  # warm-up only
    before = cpu_by_role()
    tally = await closed_loop(client, make, concurrency, args.seconds, 0.0)
    return tally, per_operation_ms(before, cpu_by_role(), tally.ok)


@dataclass(frozen=True)
class OpenLoop:
    """An open loop at a fixed rate: its outcomes and each role's CPU per request."""

    rate_per_s: float = 0.0
    tally: Tally = field(default_factory=Tally)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # Drawdowns: what the relay's histogram of request-to-card times saw meanwhile.
    money: HistogramReading | None = None

    def money_text(self) -> str:
        """'mean 98 ms, p99 <= 0.25 s (9,000 paid)', or '' when not read."""
        if self.money is None or not self.money.count:
            return ""
        return (
            f"mean {self.money.mean_s() * 1000:.0f} ms, p99 <= "
            f"{self.money.quantile_bound_s(0.99):g} s ({self.money.count:,.0f} paid)"
        )

    def machine_busy(self) -> float:
        """The share of this machine's CPUs the whole stack used: at half saturation a
        request costs more than at saturation (smaller group calls, a wake-up each), so
        "half the rate" is not half the machine."""
        return sum(self.cpu_ms.values()) * self.rate_per_s / 1000 / (os.cpu_count() or 1)


async def measured_open_loop(
    client: Client, make: Maker, rate: float, seconds: float, *, money_url: str = ""
) -> OpenLoop:
    """`open_loop` with each role's CPU per request; with `money_url` (the relay's
    /metrics) also the request-to-card times of the payments made meanwhile."""
    money = scrape(money_url, DISBURSED) if money_url else None
    before = cpu_by_role()
    tally = await open_loop(client, make, rate, seconds)
    cpu = per_operation_ms(before, cpu_by_role(), tally.ok)
    if money is not None:
        await asyncio.sleep(MONEY_SETTLE_S)  # the window's last drawdowns being paid
        money = scrape(money_url, DISBURSED) - money
    return OpenLoop(rate, tally, cpu, money)


async def sweep(client: Client, make: Callable[[int], Maker], args: argparse.Namespace) -> Sweep:
    """Steps 2 and 4: a measured loop at each `--concurrency`."""
    points: dict[int, float] = {}
    best: tuple[Tally, int, dict[str, float]] | None = None
    for concurrency in args.concurrency:
        tally, cpu = await measured_loop(client, make(concurrency), concurrency, args)
        points[concurrency] = tally.per_s
        say(f"{concurrency} in flight: {tally.per_s:,.0f}/s, problems: {tally.problems()}")
        if best is None or tally.per_s > best[0].per_s:
            best = (tally, concurrency, cpu)
    assert best is not None
    return Sweep(points, *best)


@dataclass(frozen=True)
class Results:
    tps: float
    draw_sweep: Sweep  # saturation: its best count's outcomes and CPU per drawdown
    draw_half: OpenLoop
    repay_sweep: Sweep
    loans_estimate: int
    repay_half: OpenLoop = field(default_factory=OpenLoop)
    mixed_draw: Tally = dataclasses.field(default_factory=Tally)
    mixed_pay: Tally = dataclasses.field(default_factory=Tally)
    pgbench: dict[int, float] = dataclasses.field(default_factory=dict)  # clients -> tps
    pgbench_after: float = 0.0  # at the best count again, after the API steps


async def _loans_estimate() -> int:
    """Loans in all shards, from the planner's statistics (cheap, approximate)."""
    total = 0
    for shard in shards_from_env(os.environ):
        conn = await asyncpg.connect(shard.dsn, timeout=10)
        try:
            total += int(
                await conn.fetchval(
                    "SELECT greatest(reltuples, 0) FROM pg_class WHERE relname = 'loan'"
                )
                or 0
            )
        finally:
            await conn.close()
    return total


async def run_api(args: argparse.Namespace, customers: list[SeededCustomer]) -> Results:
    client = Client(args.base_url)
    try:
        counts = "/".join(map(str, args.concurrency))
        say(f"drawdowns at saturation: {counts} in flight, {args.seconds} s each")
        draws = await sweep(client, lambda c: drawdown_maker(customers, c), args)
        saturated = draws.best
        half_rate = max(saturated.per_s / 2, 1.0)
        say(f"{saturated.per_s:.0f}/s; now open loop at {half_rate:.0f}/s, {args.seconds} s")
        half = await measured_open_loop(
            client,
            drawdown_maker(customers[::-1], 1),
            half_rate,
            args.seconds,
            money_url=args.relay_metrics,
        )
        say(f"p99 {half.tally.percentile_ms(0.99):.1f} ms; now repayments at saturation")
        pays = await sweep(client, lambda c: repayment_maker(customers, c), args)
        repaid = pays.best
        repay_rate = max(repaid.per_s / 2, 1.0)
        say(f"{repaid.per_s:.0f}/s; now repayments open loop at {repay_rate:.0f}/s")
        repay_half = await measured_open_loop(
            client, repayment_maker(customers[::-1], 1), repay_rate, args.seconds
        )
        in_flight = pays.best_concurrency
        say(f"repayment day: 70 % repayments, 30 % drawdowns, {in_flight} in flight")
        mixed_draw, mixed_pay = await mixed_closed_loop(
            client,
            drawdown_maker(customers, in_flight),
            repayment_maker(customers, in_flight),
            in_flight,
            args.seconds,
            draw_share=0.3,
        )
    finally:
        client.http.close()
    loans = await _loans_estimate()
    return Results(0.0, draws, half, pays, loans, repay_half, mixed_draw, mixed_pay)


async def mixed_closed_loop(
    client: Client,
    draw: Maker,
    pay: Maker,
    concurrency: int,
    seconds: float,
    *,
    draw_share: float,
) -> tuple[Tally, Tally]:
    """`concurrency` requests in flight, each a drawdown with probability `draw_share`
    (every tenth request's place fixed, so the mix is exact), else a repayment."""
    tallies = (Tally(), Tally())
    end = time.perf_counter() + seconds
    draws_in_ten = round(draw_share * 10)

    async def worker(w: int) -> None:
        n = 0
        while (now := time.perf_counter()) < end:
            is_draw = (w + n) % 10 < draws_in_ten
            path, body = (draw if is_draw else pay)(w, n)
            n += 1
            await client.post(path, body, tallies[0 if is_draw else 1], now)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    for tally in tallies:
        tally.window_s = seconds
    return tallies


async def saturation_rounds(args: argparse.Namespace, customers: list[SeededCustomer]) -> None:
    """Step 2 (or 4, `--kind repayment`) alone, `--saturation-rounds` times at each
    `--concurrency`: for measuring one change against the last, in pairs, on a machine
    whose speed drifts by the hour."""
    client = Client(args.base_url)
    try:
        for n in range(args.saturation_rounds):
            for concurrency in args.concurrency:
                make = _makers[args.kind](customers, concurrency)
                tally, cpu = await measured_loop(client, make, concurrency, args)
                print(
                    f"round {n + 1}, {concurrency} in flight: {tally.per_s:.0f} {args.kind}s/s, "
                    f"p99 {tally.percentile_ms(0.99):.1f} ms, problems: {tally.problems()}; "
                    f"CPU per {args.kind}, ms: {_roles(cpu)}",
                    flush=True,
                )
    finally:
        client.http.close()


async def open_rounds(args: argparse.Namespace, customers: list[SeededCustomer]) -> None:
    """Step 3 (or 5) alone at a fixed `--open-rate`, `--open-rounds` windows of
    `--seconds`: latency at the same load, whatever the saturated rate of the version
    measured."""
    client = Client(args.base_url)
    maker = _makers[args.kind]
    try:
        warm = args.concurrency[0]
        await closed_loop(client, maker(customers, warm), warm, 0.0, args.warmup_s)  # warm-up only
        for n in range(args.open_rounds):
            sample = customers[n % 2 :: 2][::-1]  # customers the warm-up did not just use
            money_url = args.relay_metrics if args.kind == "drawdown" else ""
            run = await measured_open_loop(
                client, maker(sample, 1), args.open_rate, args.seconds, money_url=money_url
            )
            tally = run.tally
            money = f"; money on the card: {run.money_text()}" if run.money_text() else ""
            print(
                f"window {n + 1}: {args.open_rate:.0f}/s open loop, p50 "
                f"{tally.percentile_ms(0.5):.1f} ms, p90 {tally.percentile_ms(0.9):.1f} ms, "
                f"p99 {tally.percentile_ms(0.99):.1f} ms, problems: {tally.problems()}; "
                f"CPU per {args.kind}, ms: {_roles(run.cpu_ms)}; "
                f"machine {run.machine_busy():.0%} busy{money}",
                flush=True,
            )
    finally:
        client.http.close()


def _roles(cpu: dict[str, float]) -> str:
    """'postgres 1.03, engine 0.78, ...': each role's CPU per request, in ms."""
    return ", ".join(f"{role} {ms:.2f}" for role, ms in cpu.items())


_makers: Final[dict[str, Callable[[list[SeededCustomer], int], Maker]]] = {
    "drawdown": drawdown_maker,
    "repayment": repayment_maker,
}


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _ratio(value: float, tps: float) -> str:
    return f"{value / tps:.2f}" if tps else "-"


def table(results: Results, args: argparse.Namespace) -> str:
    tps, half = results.tps, results.draw_half.tally
    draw, repay = results.draw_sweep.best, results.repay_sweep.best
    p99 = half.percentile_ms(0.99)
    draw_ok = tps and draw.per_s >= TARGET_DRAWDOWN_RATIO * tps
    rows = [
        "| measure | value | ratio to pgbench tps | target | problems |",
        "|---|---:|---:|---|---|",
        f"| pgbench TPC-B tps (scale {args.pgbench_scale}, {args.pgbench_seconds} s; "
        f"{_clients(results)}) | {tps:,.0f} | 1.00 | baseline | |",
        f"| drawdowns/s at saturation (best of {results.draw_sweep.describe('drawdowns')}) | "
        f"{draw.per_s:,.0f} | "
        f"{_ratio(draw.per_s, tps)} | >= {TARGET_DRAWDOWN_RATIO} "
        f"{'met' if draw_ok else 'MISSED'} | {draw.problems()} |",
        f"| drawdown p50 at half saturation ({results.draw_half.rate_per_s:,.0f}/s open loop) | "
        f"{half.percentile_ms(0.5):.1f} ms | | | {half.problems()} |",
        f"| drawdown p99 at half saturation | {p99:.1f} ms | | <= {TARGET_P99_MS:.0f} ms "
        f"{'met' if p99 <= TARGET_P99_MS else 'MISSED'} | |",
        f"| drawdown p99 at saturation (closed loop) | {draw.percentile_ms(0.99):.1f} ms | | | |",
    ]
    if results.draw_half.money_text():
        rows.append(
            "| drawdowns' money on the card at half saturation (the relay's "
            f"{DISBURSED}) | {results.draw_half.money_text()} | | well under 30 s | |"
        )
    rows += [
        f"| repayments/s at saturation (prepay {PREPAY_AMOUNT}; best of "
        f"{results.repay_sweep.describe('repayments')}) | "
        f"{repay.per_s:,.0f} | {_ratio(repay.per_s, tps)} | >= {TARGET_REPAYMENT_RATIO} "
        f"{'met' if tps and repay.per_s >= TARGET_REPAYMENT_RATIO * tps else 'MISSED'} | "
        f"{repay.problems()} |",
    ]
    repay_half = results.repay_half.tally
    if repay_half.latencies_s:
        repay_p99 = repay_half.percentile_ms(0.99)
        rows.append(
            f"| repayment p50 at half saturation | {repay_half.percentile_ms(0.5):.1f} ms | | | |"
        )
        rows.append(
            f"| repayment p99 at half saturation ({results.repay_half.rate_per_s:,.0f}/s open "
            f"loop) | {repay_p99:.1f} ms | | <= {TARGET_P99_MS:.0f} ms "
            f"{'met' if repay_p99 <= TARGET_P99_MS else 'MISSED'} | {repay_half.problems()} |"
        )
    mixed = (results.mixed_draw, results.mixed_pay)
    if any(t.latencies_s for t in mixed):
        total = mixed[0].per_s + mixed[1].per_s
        rows.append(
            f"| repayment day (70 % repayments, 30 % drawdowns, "
            f"{results.repay_sweep.best_concurrency} in flight), requests/s | "
            f"{total:,.0f} ({mixed[1].per_s:,.0f} repayments, {mixed[0].per_s:,.0f} drawdowns) "
            f"| {_ratio(total, tps)} | | {mixed[1].problems()}; {mixed[0].problems()} |"
        )
        rows.append(
            f"| repayment day p99: repayments / drawdowns | {mixed[1].percentile_ms(0.99):.1f} / "
            f"{mixed[0].percentile_ms(0.99):.1f} ms | | | |"
        )
    for what, cpu in (
        ("drawdown", results.draw_sweep.cpu_ms),
        ("repayment", results.repay_sweep.cpu_ms),
    ):
        if cpu:
            rows.append(
                f"| CPU per {what} at saturation, ms ({_roles(cpu)}) | "
                f"{sum(cpu.values()):.2f} ms | | | |"
            )
    for what, run in (("drawdown", results.draw_half), ("repayment", results.repay_half)):
        if run.cpu_ms:
            rows.append(
                f"| CPU per {what} at half saturation, ms ({_roles(run.cpu_ms)}; the machine "
                f"{run.machine_busy():.0%} busy) | {sum(run.cpu_ms.values()):.2f} ms | | | |"
            )
    return "\n".join(rows)


def _clients(results: Results) -> str:
    if not results.pgbench:
        return "given by --pgbench-tps"
    before = ", ".join(f"{c} clients: {tps:,.0f}" for c, tps in results.pgbench.items())
    return f"before: {before}; after, the best count again: {results.pgbench_after:,.0f}; the mean"


def _versions(control_dsn: str) -> str:
    async def server_version() -> str:
        conn = await asyncpg.connect(control_dsn, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    pg = asyncio.run(server_version())
    redis = subprocess.run(
        ["redis-server", "--version"], check=False, capture_output=True, text=True
    ).stdout
    redis_version = re.search(r"v=([0-9.]+)", redis)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, PostgreSQL {pg}, "
        f"Redis {redis_version.group(1) if redis_version else '?'}, commit {commit or '?'}"
    )


def append_to_benchmarks(
    text: str,
    args: argparse.Namespace,
    control_dsn: str,
    *,
    title: str = "Channel API",
    module: str = "loadtest.bench_api",
) -> None:
    command = f"python -m {module} " + " ".join(sys.argv[1:])
    section = (
        f"\n## {title} ({dt.date.today().isoformat()}"
        f"{', ' + args.label if args.label else ''})\n\n"
        f"`{command.strip()}`; {_versions(control_dsn)}.\n\n{text}\n"
    )
    with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as handle:
        handle.write(section)


def _parser() -> argparse.ArgumentParser:
    port = os.environ.get("ENGINE_HTTP_PORT") or "8080"
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_api", description=__doc__)
    parser.add_argument("--base-url", default=f"http://127.0.0.1:{port}")
    parser.add_argument(
        "--concurrency",
        type=_counts,
        default=(32, 64, 128),
        help="requests in flight in the closed loops, one count or several (32,64,128): "
        "saturation is the best of them",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="each API measurement")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument(
        "--pgbench-clients", type=_counts, default=(4, 8, 16), help="one count or several"
    )
    parser.add_argument("--pgbench-seconds", type=int, default=30)
    parser.add_argument("--pgbench-tps", type=float, help="skip pgbench, use this baseline")
    parser.add_argument(
        "--saturation-rounds",
        type=int,
        default=0,
        help="only step 2 (4 with --kind repayment), this many rounds of --seconds, one line "
        "each (no pgbench, no table)",
    )
    parser.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        help="only step 3 (5 with --kind repayment) at this rate (requests/s), --open-rounds "
        "windows of --seconds",
    )
    parser.add_argument("--open-rounds", type=int, default=2)
    parser.add_argument(
        "--kind",
        choices=("drawdown", "repayment"),
        default="drawdown",
        help="what --saturation-rounds and --open-rate send",
    )
    relay_port = os.environ.get("ENGINE_RELAY_METRICS_PORT") or "9101"
    parser.add_argument(
        "--relay-metrics",
        default=f"http://127.0.0.1:{relay_port}/metrics",
        help="the online relay's /metrics, for the drawdowns' time to the card ('' for none)",
    )
    parser.add_argument("--label", default="", help="a note for the section, e.g. '1M seeded'")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    return parser


def _counts(text: str) -> tuple[int, ...]:
    """'32,64,128' -> (32, 64, 128): each 1..512."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not all(1 <= c <= 512 for c in counts):
        raise argparse.ArgumentTypeError(f"each count must be 1..512: {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.seconds <= 600:
        raise SystemExit("bench: --seconds must be 1..600")
    customers = read_seeded(seeded_file_path(), SEEDED_READ_MAX)
    if len(customers) < max(args.concurrency) * 4:
        raise SystemExit(f"bench: {len(customers)} seeded customers; seed at least 4 per request")
    if args.open_rate > 0:
        _run(open_rounds(args, customers))
        return 0
    if args.saturation_rounds:
        _run(saturation_rounds(args, customers))
        return 0
    control_dsn = control_dsn_from_env(os.environ)
    server = urlsplit(control_dsn)

    def pgbench_at(clients: int) -> float:
        setup = PgbenchSetup(
            server.hostname or "127.0.0.1",
            server.port or 5432,
            args.pgbench_scale,
            clients,
            2,
            args.pgbench_seconds,
        )
        say(" ".join(setup.command()))
        return run_pgbench(setup)

    pgbench: dict[int, float] = {}
    if args.pgbench_tps is None:
        asyncio.run(_ensure_database(control_dsn))
        pgbench = {clients: pgbench_at(clients) for clients in args.pgbench_clients}
    results = _run(run_api(args, customers))
    tps = args.pgbench_tps
    after = 0.0
    if tps is None:
        # Again after the API steps, at pgbench's best count: the machine's speed drifts
        # within a run, and the baseline is the mean of the two.
        best = max(pgbench, key=pgbench.__getitem__)
        after = pgbench_at(best)
        tps = (pgbench[best] + after) / 2
    results = dataclasses.replace(results, tps=tps, pgbench=pgbench, pgbench_after=after)
    text = table(results, args)
    text += f"\n\nLoans in the shards: about {results.loans_estimate:,}; "
    text += f"seeded customers used: {len(customers):,}."
    print(text)
    if args.append:
        append_to_benchmarks(text, args, control_dsn)
    return 0


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())

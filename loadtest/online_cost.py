"""What the day-end bench's online traffic costs on its own, at several rates.

    .venv/bin/python -m loadtest.online_cost [--rates 40:30,85:60,170:120] [--seconds 20]

For each DRAWDOWNS:REPAYMENTS pair (per second) runs `loadtest.bench_eod`'s open loops
alone (no day-end, and after the relay has finished what a day-end left in the
outbox) for `--seconds` and prints the p99 of each kind, the cores the
stack spent (this client included: it shares the machine) and the CPU per request by
role. The cost of a request is not fixed: the group calls that book drawdowns and
repayments together cost about the same for one request as for ten, so a request at a
quarter of saturation costs more than one at saturation, and "half saturation" by
rate holds more than half the machine. Read with `bench_eod`: the day-end can only
use what the online loops leave. Needs `make up` and seeded customers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from loadtest.bench_api import Client
from loadtest.bench_eod import SEEDED_READ_MAX, loops_until, quiet_relay
from loadtest.client_data import SeededCustomer, read_seeded, seeded_file_path
from loadtest.cpu_share import cpu_spent


def rates_arg(text: str) -> list[tuple[float, float]]:
    """`--rates`: DRAWDOWNS:REPAYMENTS pairs per second, comma-separated, each above 0."""
    pairs = []
    for part in text.split(","):
        draw, _, pay = part.partition(":")
        try:
            pair = (float(draw), float(pay))
        except ValueError:
            pair = (0.0, 0.0)
        if not (0 < pair[0] < 10_000 and 0 < pair[1] < 10_000):
            raise argparse.ArgumentTypeError(f"{part!r} is not DRAWDOWNS:REPAYMENTS, e.g. 85:60")
        pairs.append(pair)
    return pairs


async def _one(
    client: Client, customers: list[SeededCustomer], rates: tuple[float, float], seconds: float
) -> str:
    async with cpu_spent() as spent:
        began = time.perf_counter()
        draw, pay = await loops_until(client, customers, rates, None, seconds)
        wall = time.perf_counter() - began
    requests = len(draw.latencies_s) + len(pay.latencies_s)
    total = sum(s for role, s in spent.items() if role != "other")
    roles = ", ".join(
        f"{role} {s / requests * 1000:.2f}"
        for role, s in sorted(spent.items(), key=lambda item: -item[1])
        if role != "other" and s > 0
    )
    return (
        f"| {rates[0]:.0f} / {rates[1]:.0f} | {draw.percentile_ms(0.99):.1f} / "
        f"{pay.percentile_ms(0.99):.1f} | {total / wall:.2f} | "
        f"{total / max(requests, 1) * 1000:.2f} | {roles} |"
    )


async def run(args: argparse.Namespace) -> list[str]:
    customers = read_seeded(seeded_file_path(), SEEDED_READ_MAX)
    client = Client(args.base_url)
    rows = [
        "| drawdowns/s / repayments/s | p99 drawdowns / repayments (ms) | cores (this stack) "
        "| CPU per request (ms) | by role (ms per request) |",
        "|---|---:|---:|---:|---|",
    ]
    try:
        await quiet_relay()
        print("\n".join(rows), flush=True)
        for rates in args.rates:
            rows.append(await _one(client, customers, rates, args.seconds))
            print(rows[-1], flush=True)
    finally:
        client.http.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.online_cost", description=__doc__)
    parser.add_argument("--rates", type=rates_arg, default="40:30,85:60,170:120")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--base-url", default=f"http://127.0.0.1:{os.environ.get('ENGINE_HTTP_PORT', '8080')}"
    )
    args = parser.parse_args(argv)
    if not read_seeded(seeded_file_path(), 1):
        print("online_cost: no seeded customers: run `make seed` first", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

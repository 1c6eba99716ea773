"""Statements PostgreSQL runs per repayment or drawdown, from `pg_stat_statements`.

    .venv/bin/python -m loadtest.statements [--kind repayment|drawdown] [--seconds 15]
        [--concurrency 8] [--top 25]

Resets `pg_stat_statements` on every server of the stack (ops/stack.sh preloads it),
runs a closed loop of `--kind` requests against the engine (the bench's requests,
`loadtest.bench_api`), waits for the relay to finish their outbox rows (SMS
included), then prints the calls and the execution time per request, in total
and per statement (utility statements such as BEGIN and COMMIT counted too: each
is a round trip). Everything the stack ran meanwhile counts: run it on a quiet
stack, and read the figures as "per request, all processes together".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from loadtest.bench_api import (
    SEEDED_READ_MAX,
    Client,
    closed_loop,
    drawdown_maker,
    repayment_maker,
)
from loadtest.client_data import read_seeded, seeded_file_path
from loadtest.seed import control_dsn_from_env, shards_from_env


def _servers() -> list[str]:
    """One DSN per PostgreSQL server of the stack (its `postgres` database)."""
    seen: dict[tuple[str, int], str] = {}
    dsns = [control_dsn_from_env(os.environ)] + [s.dsn for s in shards_from_env(os.environ)]
    for dsn in dsns:
        parts = urlsplit(dsn)
        key = (parts.hostname or "127.0.0.1", parts.port or 5432)
        seen.setdefault(key, urlunsplit(parts._replace(path="/postgres")))
    return list(seen.values())


async def _each(sql: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = []
    for dsn in _servers():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows.extend(await conn.fetch(sql))
        finally:
            await conn.close()
    return rows


async def _outbox_left() -> int:
    left = 0
    for shard in shards_from_env(os.environ):
        conn = await asyncpg.connect(shard.dsn, timeout=10)
        try:
            left += int(
                await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending', 'unknown')"
                )
            )
        finally:
            await conn.close()
    return left


_STATS_SQL = """
SELECT s.query, sum(s.calls)::bigint AS calls, sum(s.total_exec_time)::float8 AS ms
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname <> 'postgres' AND d.datname <> 'pgbench'
GROUP BY s.query
"""


async def measure(args: argparse.Namespace) -> None:
    customers = read_seeded(seeded_file_path(), SEEDED_READ_MAX)
    port = os.environ.get("ENGINE_HTTP_PORT") or "8080"
    client = Client(f"http://127.0.0.1:{port}")
    make = (repayment_maker if args.kind == "repayment" else drawdown_maker)(
        customers[args.offset :], args.concurrency
    )
    try:
        await closed_loop(client, make, args.concurrency, 0.0, 2.0)  # warm-up, not counted
        await _settle()
        await _each("SELECT pg_stat_statements_reset()")
        tally = await closed_loop(client, make, args.concurrency, args.seconds, 0.0)
        await _settle()
    finally:
        client.http.close()
    merged: dict[str, list[float]] = {}
    for r in await _each(_STATS_SQL):  # the same statement in every shard database
        entry = merged.setdefault(" ".join(str(r["query"]).split()), [0, 0.0])
        entry[0] += int(r["calls"])
        entry[1] += float(r["ms"])
    rows = [{"query": q, "calls": c, "ms": m} for q, (c, m) in merged.items()]
    n = tally.ok
    calls = sum(int(r["calls"]) for r in rows)
    ms = sum(float(r["ms"]) for r in rows)
    print(
        f"{args.kind}s: {n} booked ({tally.per_s:.0f}/s, problems: {tally.problems()}); "
        f"statements per {args.kind}: {calls / n:.1f}, execution time per {args.kind}: "
        f"{ms / n:.2f} ms"
    )
    print(f"| calls per {args.kind} | ms per {args.kind} | statement |")
    print("|---:|---:|---|")
    for r in sorted(rows, key=lambda r: -int(r["calls"]))[: args.top]:
        query = str(r["query"])[:100].replace("|", "\\|")
        print(f"| {int(r['calls']) / n:.2f} | {float(r['ms']) / n:.3f} | `{query}` |")


async def _settle(timeout_s: float = 30.0) -> None:
    """Until the relay has finished every outbox row (debits, SMS), or `timeout_s`."""
    end = time.monotonic() + timeout_s
    while await _outbox_left() and time.monotonic() < end:  # noqa: ASYNC110 - polls a database
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.statements", description=__doc__)
    parser.add_argument("--kind", choices=("repayment", "drawdown"), default="repayment")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--offset", type=int, default=0, help="skip this many seeded customers")
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(measure(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

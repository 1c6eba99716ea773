"""Where the stack's PostgreSQL backends spend their active time, by who they serve.

    python -m loadtest.pg_waits [--seconds 30] [--every 0.1]

Samples `pg_stat_activity` on every server of the stack and prints, per application
(the part of `application_name` before ':' - engine, relay, eod - or the backend type)
and wait event, the average number of active backends in it: 0.49 "engine IO WALSync"
means that half a backend of the engine's was, on average, waiting for a WAL flush.
"CPU" is active with no wait event (running, or runnable and waiting for a core).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import time

import asyncpg

from loadtest.seed import shards_from_env

_SQL = """SELECT coalesce(nullif(split_part(application_name, ':', 1), ''), backend_type) AS app,
                 coalesce(wait_event_type, 'CPU') AS kind, coalesce(wait_event, '-') AS event
          FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"""


async def _one_per_server() -> list[asyncpg.Connection]:
    """A connection to each server of the shards (several shards may share one)."""
    conns: dict[int, asyncpg.Connection] = {}
    for shard in shards_from_env(os.environ):
        conn = await asyncpg.connect(shard.dsn, database="postgres", timeout=10)
        server = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
        if server in conns:
            await conn.close()
        else:
            conns[server] = conn
    return list(conns.values())


async def sample(seconds: float, every_s: float) -> list[tuple[float, str, str, str]]:
    conns = await _one_per_server()
    seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
    samples = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for conn in conns:
                for row in await conn.fetch(_SQL):
                    seen[(row["app"], row["kind"], row["event"])] += 1
            samples += 1
            await asyncio.sleep(every_s)
    finally:
        for conn in conns:
            await conn.close()
    return [(n / max(samples, 1), *key) for key, n in seen.most_common()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.pg_waits", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between samples")
    args = parser.parse_args(argv)
    for share, app, kind, event in asyncio.run(sample(args.seconds, args.every)):
        print(f"{share:6.2f}  {app:<24} {kind:<10} {event}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

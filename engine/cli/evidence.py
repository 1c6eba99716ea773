"""`python -m engine evidence verify`: prove no signed document or chain entry changed.

Walks every shard's evidence chain (each entry's hash recomputed, each link to
the previous entry checked, no gap in the sequence) and re-hashes every signed
document. Prints each problem; exit 1 if there is any (or a shard is unreachable).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("evidence", help="verify the e-contract evidence chains")
    parser.add_argument("action", choices=["verify"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from engine.origination.contracts import verify_shard
    from engine.settings import load_settings

    settings = load_settings()

    async def one(name: str, dsn: str) -> tuple[str, list[str], int]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            entries = int(await conn.fetchval("SELECT count(*) FROM evidence_entry"))
            return name, await verify_shard(conn), entries
        finally:
            await conn.close()

    async def main() -> list[tuple[str, list[str], int]]:
        return list(await asyncio.gather(*(one(s.name, s.dsn) for s in settings.shards)))

    try:
        results = asyncio.run(main())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"evidence: a shard is unreachable: {exc!r}", file=sys.stderr)
        return 1
    failed = False
    for name, problems, entries in results:
        for problem in problems:
            print(f"{name}: {problem}")
        failed = failed or bool(problems)
        state = "INTACT" if not problems else f"{len(problems)} PROBLEMS"
        print(f"{name}: {entries} entries, {state}")
    return 1 if failed else 0

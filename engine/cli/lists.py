"""`python -m engine whitelist import FILE.csv` and `python -m engine blacklist import FILE.csv`.

The whole file is checked first; any bad row (reported with its line number)
and nothing is imported (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    for name in ("whitelist", "blacklist"):
        parser = subparsers.add_parser(name, help=f"import a {name} CSV file")
        parser.add_argument("action", choices=["import"])
        parser.add_argument("file", type=Path)
        parser.set_defaults(func=run, list_kind=name)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import datetime as dt

    from engine.origination import lists
    from engine.security.pii import PiiCipher
    from engine.settings import load_settings
    from sharding.pools import ShardPools

    settings = load_settings()
    today = dt.date.today()
    try:
        if args.list_kind == "whitelist":
            white = lists.read_white_list(args.file, today)
        else:
            black = lists.read_black_list(args.file, today)
    except lists.ListFileError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        print(f"{args.list_kind}: nothing imported", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.list_kind}: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1

    async def store() -> int:
        crypto = settings.crypto
        cipher = PiiCipher.from_config(
            crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key
        )
        pools = ShardPools(settings.shard_map(), settings.pool, "lists")
        await pools.open()
        try:
            if args.list_kind == "whitelist":
                return await lists.store_white_list(pools, cipher, white)
            return await lists.store_black_list(pools, cipher, black)
        finally:
            await pools.close()

    count = asyncio.run(store())
    print(f"{args.list_kind}: {count} entries imported")
    return 0

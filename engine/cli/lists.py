"""`python -m engine whitelist|blacklist|bureauflag import FILE.csv`.

The whole file is checked first; any bad row (reported with its line number)
and nothing is imported (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.cli.admin_common import run_on_control

COMMANDS = ("whitelist", "blacklist", "bureauflag")


def register(subparsers: Any) -> None:
    helps = {
        "whitelist": "import a whitelist CSV file",
        "blacklist": "import a blacklist CSV file",
        "bureauflag": "set or clear customers' bureau flags from a CSV file",
    }
    for name in COMMANDS:
        parser = subparsers.add_parser(name, help=helps[name])
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
        elif args.list_kind == "blacklist":
            black = lists.read_black_list(args.file, today)
        else:
            flags = lists.read_bureau_flags(args.file, today)
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
            if args.list_kind == "blacklist":
                return await lists.store_black_list(pools, cipher, black)
            return await lists.store_bureau_flags(pools, cipher, flags)
        finally:
            await pools.close()

    count = asyncio.run(store())

    async def audited(conn: Any, cipher: Any, settings: Any) -> None:
        from engine.cli.operators import cli_principal
        from engine.operators import audit

        entry = audit.event(
            cli_principal(), f"{args.list_kind}.import", f"file:{Path(args.file).name}",
            after={"count": count}, request_id="cli",
        )  # fmt: skip
        await audit.append_alone(conn, entry)

    run_on_control(audited)
    what = "customers changed" if args.list_kind == "bureauflag" else "entries imported"
    print(f"{args.list_kind}: {count} {what}")
    return 0

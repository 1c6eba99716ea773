"""`python -m engine migrate`: apply missing migrations to the control database and every shard."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate", help="apply SQL migrations to control and every shard"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from engine.migrate import migrate_all
    from engine.settings import load_settings

    results = asyncio.run(migrate_all(load_settings()))
    for result in results:
        applied = ", ".join(map(str, result.applied)) if result.applied else "up to date"
        steps = "".join(f"; {step}" for step in result.data_steps)
        print(f"{result.database}: {applied}{steps}", file=sys.stdout)
    return 0

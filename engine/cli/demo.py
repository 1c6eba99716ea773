"""`python -m engine demo load`: the local stack's demo data (API.md), and nowhere else.

Refused unless ENGINE_ENV is dev or test.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.admin_common import run_on_control


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="load the demo tenant, products and channel")
    parser.add_argument("action", choices=["load"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.stores.control_admin import load_demo

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        if settings.env not in ("dev", "test"):
            print("demo: refused: demo data is for ENGINE_ENV=dev or test only", file=sys.stderr)
            return 1
        await load_demo(conn, cipher)
        print(
            "demo: union, member banks demo and demo2, templates and products demo-credit,"
            " demo-consumer and demo2-credit, channels demo and demo2 loaded"
        )
        return 0

    return run_on_control(work)

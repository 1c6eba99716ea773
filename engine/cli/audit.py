"""`python -m engine audit verify`: walk the operators' audit trail from its first entry
and check every hash and link (engine/operators/audit.py). Prints OK and the count, or
the first broken entry and every problem found; exit 1 on a break."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.admin_common import run_on_control


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="the operators' audit trail")
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    sub.add_parser("verify", help="check the audit trail's hash chain")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.operators import audit

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        verified = await audit.verify(conn)
        if not verified.problems:
            print(f"audit: OK, {verified.entries} entries")
            return 0
        first = verified.problems[0]
        print(f"audit: BROKEN at entry {first.seq}: {first.kind}: {first.detail}")
        for problem in verified.problems[1:20]:
            print(f"  entry {problem.seq}: {problem.kind}: {problem.detail}", file=sys.stderr)
        return 1

    return run_on_control(work)

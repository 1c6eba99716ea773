"""`python -m engine reconcile --date YYYY-MM-DD`: core's transaction file against the ledger.

Prints every break (missing on either side, amount differs) and a summary;
exit 1 if there is any break, 2 if core's file cannot be read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconcile", help="compare core's transaction file with the ledger"
    )
    parser.add_argument("--date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    import aiohttp

    from engine.adapters.core_bank import CoreBankClient
    from engine.services.reconcile import reconcile
    from engine.settings import load_settings
    from ledger.money import format_fen

    settings = load_settings()

    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            core = CoreBankClient(session, settings.external.core_url, 60.0)
            return await reconcile(core, [s.dsn for s in settings.shards], args.date)

    try:
        report = asyncio.run(main())
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"reconcile: core's transaction file could not be read: {exc!r}", file=sys.stderr)
        return 2
    for item in report.breaks:
        core = "-" if item.core_amount_fen is None else format_fen(item.core_amount_fen)
        ours = "-" if item.ledger_amount_fen is None else format_fen(item.ledger_amount_fen)
        print(f"BREAK {item.reference} {item.problem} core={core} ledger={ours}")
    print(f"{report.day}: {report.matched} matched, {len(report.breaks)} breaks")
    return 1 if report.breaks else 0

"""`python -m engine report daily-flow|outstanding-by-product|asset-quality
[--tenant T] [--date D] [--csv]`: a member bank's report, or the union's (no --tenant, or
the union's id), from the ledger of every shard (engine.reports.ledger_reports). JSON, or
CSV with --csv. The date defaults to the business date."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

KINDS = ("daily-flow", "outstanding-by-product", "asset-quality")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="reports per member bank and the union")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--tenant", help="a member bank (default: the union, all banks)")
    parser.add_argument("--date", type=dt.date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg
    import msgspec

    from engine.reports import ledger_reports as reports
    from engine.settings import load_settings
    from sharding.pools import ShardPools

    async def main() -> int:
        settings = load_settings()
        control = await asyncpg.connect(settings.control_dsn, timeout=10)
        try:
            today = await control.fetchval("SELECT business_date FROM business_clock")
            tenant = await control.fetchrow(
                "SELECT tenant_id, kind FROM tenant WHERE tenant_id = $1", args.tenant or ""
            )
            if args.tenant and tenant is None:
                print(f"report: TENANT_NOT_FOUND: no tenant {args.tenant!r}", file=sys.stderr)
                return 2
            on = args.date or today
            classified_on = await control.fetchval(
                """SELECT max(business_date) FROM eod_day
                   WHERE finished_at IS NOT NULL AND business_date <= $1""",
                on,
            )
        finally:
            await control.close()
        scope = None if tenant is None or tenant["kind"] == "union" else [args.tenant]
        pools = ShardPools(settings.shard_map(), settings.pool, "report")
        await pools.open()
        try:
            report: reports.Report
            if args.kind == "daily-flow":
                report = await reports.daily_flow(pools, scope, on)
            elif args.kind == "outstanding-by-product":
                report = await reports.outstanding_by_product(pools, scope, on, today)
            else:
                report = await reports.asset_quality(pools, scope, on, today, classified_on)
        finally:
            await pools.close()
        if args.csv:
            sys.stdout.write(reports.to_csv(report))
        else:
            sys.stdout.write(msgspec.json.format(msgspec.json.encode(report).decode()) + "\n")
        return 0

    return asyncio.run(main())

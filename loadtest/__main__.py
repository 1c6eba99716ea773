"""`python -m loadtest …`: the load test's commands.

    python -m loadtest seed --customers N --loans-per-customer K [--workers P] [--start I]
                            [--chunk C] [--seeded-file PATH] [--no-analyze] [--row-triggers]

Seeds the shards named by ENGINE_SHARD_DSNS (else the local stack), reading the
business date and the demo product from ENGINE_CONTROL_DSN; see `loadtest.seed`.
Exit status: 0 done, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from loadtest.client_data import seeded_file_path
from loadtest.seed import (
    CHUNK_CUSTOMERS_DEFAULT,
    DUE_TODAY_EVERY,
    SeedConfig,
    SeedError,
    check_environment,
    control_dsn_from_env,
    run_seed,
    shards_from_env,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser(
        "seed", help="write customers, lines, loans, plans and postings by COPY"
    )
    seed.add_argument("--customers", type=int, required=True, help="how many customers")
    seed.add_argument("--loans-per-customer", type=int, default=4, help="K loans each (1..16)")
    seed.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    seed.add_argument("--start", type=int, default=0, help="first customer index (default 0)")
    seed.add_argument(
        "--chunk",
        type=int,
        default=CHUNK_CUSTOMERS_DEFAULT,
        help=f"customers per transaction set (default {CHUNK_CUSTOMERS_DEFAULT})",
    )
    seed.add_argument(
        "--seeded-file",
        type=Path,
        default=None,
        help="where to list the seeded customers (default $LOADTEST_SEEDED or "
        ".run/loadtest/seeded.csv)",
    )
    seed.add_argument(
        "--due-today-every",
        type=int,
        default=DUE_TODAY_EVERY,
        help=f"one loan in N has an installment due on the business date (default "
        f"{DUE_TODAY_EVERY}; 28 spreads the due dates evenly over the month)",
    )
    seed.add_argument("--no-analyze", action="store_true", help="skip ANALYZE at the end")
    seed.add_argument(
        "--row-triggers",
        action="store_true",
        help="keep the per-row foreign-key and pair-check triggers (slower; default: "
        "replica mode and one set-based ledger check per batch)",
    )
    return parser


def _seed(args: argparse.Namespace) -> int:
    check_environment(os.environ)
    config = SeedConfig(
        customers=args.customers,
        loans_per_customer=args.loans_per_customer,
        start=args.start,
        workers=args.workers,
        chunk_customers=args.chunk,
        control_dsn=control_dsn_from_env(os.environ),
        shards=shards_from_env(os.environ),
        seeded_file=args.seeded_file or seeded_file_path(),
        analyze=not args.no_analyze,
        row_triggers=args.row_triggers,
        due_today_every=args.due_today_every,
    )
    report = run_seed(config)
    print(
        f"seed: {report.customers_new} customers written, {report.customers_present} already "
        f"present, {report.rows} rows in {report.elapsed_s:.1f} s "
        f"({report.rows_per_s:,.0f} rows/s); list in {config.seeded_file}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _seed(args)
    except SeedError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nseed: interrupted; the same command resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

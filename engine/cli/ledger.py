"""`python -m engine ledger trial-balance [--deep]`: debits and credits of every shard.

Prints one line per shard and the total; exits 1 if any shard is out of
balance, if (with --deep) its accrued-interest control account differs from the
sub-ledger under it (loan_accrual, ledger migration 0023), or if it is unreachable,
since then nothing can be said of it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

BALANCES: dict[str, dict[str, int]] = {}  # shard -> account code -> balance (fen)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ledger", help="ledger reports")
    sub = parser.add_subparsers(dest="ledger_command", required=True, metavar="REPORT")
    trial = sub.add_parser("trial-balance", help="debits against credits on every shard")
    trial.add_argument(
        "--deep",
        action="store_true",
        help="also re-add every leg and the accrual sub-ledger (full scans)",
    )
    trial.add_argument(
        "--accounts", action="store_true", help="also each account's balance over all shards"
    )
    trial.set_defaults(func=run_trial_balance)


async def _trial_balances(deep: bool) -> tuple[list[tuple[str, Any]], bool]:
    import asyncio

    import asyncpg

    from engine.settings import load_settings
    from ledger.store import account_balances, trial_balance

    async def one(name: str, dsn: str) -> tuple[str, Any]:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return name, exc
        try:
            result = await trial_balance(conn, deep=deep)
            BALANCES[name] = await account_balances(conn)
            return name, result
        finally:
            await conn.close()

    settings = load_settings()
    results = await asyncio.gather(*(one(s.name, s.dsn) for s in settings.shards))
    ok = all(
        not isinstance(r, BaseException) and r.balanced and r.subledger_agrees for _, r in results
    )
    return list(results), ok


def run_trial_balance(args: argparse.Namespace) -> int:
    import asyncio

    from ledger.money import format_fen

    results, ok = asyncio.run(_trial_balances(args.deep))
    debit_sum = credit_sum = 0
    print(f"{'shard':<12}{'debits':>22}{'credits':>22}  state")
    for name, result in results:
        if isinstance(result, BaseException):
            print(f"{name:<12}{'-':>22}{'-':>22}  UNREACHABLE ({type(result).__name__})")
            continue
        debit_sum += result.debit_total_fen
        credit_sum += result.credit_total_fen
        state = (
            "balanced"
            if result.balanced
            else f"OUT OF BALANCE by {format_fen(result.imbalance_fen)}"
        )
        if args.deep and result.accounts_differing_from_legs:
            state += (
                f"; {result.accounts_differing_from_legs} account totals differ from their legs"
            )
        if args.deep and result.subledger_difference_fen:
            state += (
                "; accrued interest differs from its sub-ledger by "
                f"{format_fen(result.subledger_difference_fen)}"
            )
        debits, credits = format_fen(result.debit_total_fen), format_fen(result.credit_total_fen)
        print(f"{name:<12}{debits:>22}{credits:>22}  {state}")
    verdict = "balanced" if ok else "NOT BALANCED"
    print(f"{'total':<12}{format_fen(debit_sum):>22}{format_fen(credit_sum):>22}  {verdict}")
    if args.accounts:
        totals: dict[str, int] = {}
        for balances in BALANCES.values():
            for code, fen in balances.items():
                totals[code] = totals.get(code, 0) + fen
        print(f"{'account':<28}{'balance (Dr - Cr)':>22}")
        for code in sorted(totals):
            print(f"{code:<28}{format_fen(totals[code]):>22}")
    sys.stdout.flush()
    return 0 if ok else 1

"""`python -m engine schedule`: print a repayment plan, as a table or as JSON.

    python -m engine schedule --principal 100000.00 --annual-rate-pct 4.9 --months 12 \\
        --method equal_installment --start 2026-01-31 [--grace-months 3] [--json]

Every option is read as text and checked by the ledger's own parsers, so that
any bad value (zero or negative amount, more than two decimals, zero months,
an unknown method, grace months not below the term) ends in one line on
stderr and exit status 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.schedule import Plan

EXIT_OK = 0
EXIT_USAGE = 2
MONTHS_TEXT_LENGTH_MAX = 4  # 600 months at most: anything longer is not a term

METHOD_NAMES = (
    "equal_installment",
    "equal_principal",
    "interest_only",
    "bullet",
    "grace_then_equal_installment",
)


class OptionError(ValueError):
    """An option that is not even the right shape (a date, a whole number)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `schedule` subcommand."""
    parser = subparsers.add_parser(
        "schedule",
        help="print a repayment plan",
        description="Print the repayment plan of a loan (amounts in yuan with two decimals).",
    )
    parser.add_argument("--principal", required=True, help='loan amount, e.g. "100000.00"')
    parser.add_argument("--annual-rate-pct", required=True, help='annual rate in %%, e.g. "4.9"')
    parser.add_argument("--months", required=True, help="term in months, 1-600")
    parser.add_argument("--method", required=True, help="one of: " + ", ".join(METHOD_NAMES))
    parser.add_argument("--start", required=True, help="drawdown date, YYYY-MM-DD")
    parser.add_argument("--grace-months", default="0", help="interest-only months (grace method)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the plan from the options and print it; 2 with one line on stderr if refused."""
    from ledger.money import MoneyFormatError
    from ledger.schedule import ScheduleError

    try:
        plan = _plan_from_args(args)
    except (MoneyFormatError, ScheduleError, OptionError) as exc:
        print(f"python -m engine schedule: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(_render_json(plan) if args.json else _render_table(plan))
    return EXIT_OK


def _plan_from_args(args: argparse.Namespace) -> Plan:
    from datetime import date

    from ledger.money import parse_amount, parse_rate_pct
    from ledger.schedule import build_plan

    if args.principal.startswith("-"):
        raise OptionError("principal must be greater than zero")
    principal_fen = parse_amount(args.principal)
    annual_rate_pct = parse_rate_pct(args.annual_rate_pct)
    months = _parse_count("months", args.months)
    grace_months = _parse_count("grace months", args.grace_months)
    try:
        start = date.fromisoformat(args.start)
    except ValueError as exc:
        raise OptionError(f"start {args.start[:32]!r} must be a date like 2026-01-31") from exc
    return build_plan(
        principal_fen, annual_rate_pct, months, args.method, start, grace_months=grace_months
    )


def _parse_count(name: str, text: str) -> int:
    # Plain digits only: int() would also take "+3", " 3" and "٣".
    if not (text.isascii() and text.isdigit()) or len(text) > MONTHS_TEXT_LENGTH_MAX:
        raise OptionError(f"{name} must be a whole number like 12, got {text[:32]!r}")
    return int(text)


def _render_json(plan: Plan) -> str:
    import json

    from ledger.money import format_fen

    document = {
        "installments": [
            {
                "seq": installment.seq,
                "due_date": installment.due_date.isoformat(),
                "principal": format_fen(installment.principal_fen),
                "interest": format_fen(installment.interest_fen),
                "total": format_fen(installment.total_fen),
                "balance_after": format_fen(installment.balance_after_fen),
            }
            for installment in plan.installments
        ],
        "total_interest": format_fen(plan.total_interest_fen),
    }
    return json.dumps(document) + "\n"


def _render_table(plan: Plan) -> str:
    from ledger.money import format_fen

    header = ("seq", "due_date", "principal", "interest", "total", "balance_after")
    rows = [header]
    rows.extend(
        (
            str(installment.seq),
            installment.due_date.isoformat(),
            format_fen(installment.principal_fen),
            format_fen(installment.interest_fen),
            format_fen(installment.total_fen),
            format_fen(installment.balance_after_fen),
        )
        for installment in plan.installments
    )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    terms = plan.terms
    summary = (
        f"{terms.method} {format_fen(plan.principal_fen)} at {terms.annual_rate_pct} % "
        f"over {terms.months} months from {terms.start.isoformat()}: "
        f"total interest {format_fen(plan.total_interest_fen)}, "
        f"total {format_fen(plan.total_fen)}"
    )
    return "\n".join([*lines, summary]) + "\n"

"""Accrual of regular interest (应计利息), day by day, to the fen (MONEY.md).

    period k runs from the due date before it (or the drawdown) to its due date: T days
    on day t of it (0 < t < T)  accrued = round_half_up(interest_k × t / T)
    on or after its due date    accrued = interest_k
    the loan's figure on a day  Σ over its installments, as the plan stands now

The day-end posts, for each loan, today's figure minus what it has posted so far:
a period's postings add up exactly to its installment's interest, and a repayment
settles the receivable instead of booking income. When a prepayment rewrites the
plan, the figure follows the new plan; the interest the prepayment settled on the
prepaid principal (`extra_fen`) has been earned too and is added to the figure.

The shard computes the same figure in SQL (`interest_accrued_fen`, ledger migration
0012) for every loan of a chunk at once; `tests/test_accrual.py` holds the two equal.
"""

from __future__ import annotations

from datetime import date

from ledger.calendar import days_between
from ledger.money import round_fen_ratio
from ledger.schedule import Plan


def interest_accrued_fen(plan: Plan, on: date, extra_fen: int = 0) -> int:
    """The regular interest of `plan` accrued through the end of `on`, plus `extra_fen`
    (interest settled with prepayments), in fen."""
    assert extra_fen >= 0, extra_fen
    total_fen = extra_fen
    period_start = plan.terms.start
    for installment in plan.installments:
        if on >= installment.due_date:
            total_fen += installment.interest_fen
        else:
            if on > period_start:
                period_days = days_between(period_start, installment.due_date)
                elapsed_days = days_between(period_start, on)
                accrued = installment.interest_fen * elapsed_days
                total_fen += round_fen_ratio(accrued, period_days)
            break  # later periods have not begun
        period_start = installment.due_date
    return total_fen

"""MONEY.md's formulas written out again, for tests to expect figures from something
other than the code under test (ledger/). Exact fractions, rounded half-up once per
computed amount; nothing here imports ledger/ or engine/.

Only what the tests need: equal-installment plans, a partial prepayment before the
first due date (cash → principal, the three plan rules), overdue charges day by day
and the waterfall's loan-level split.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction


def half_up(x: Fraction) -> int:
    """Round a non-negative exact amount of fen half-up to an integer fen."""
    assert x >= 0, x
    return int((x + Fraction(1, 2)) // 1)


def monthly_rate(annual_pct: Decimal) -> Fraction:
    return Fraction(annual_pct) / 100 / 12


def daily_rate(annual_pct: Decimal) -> Fraction:
    return Fraction(annual_pct) / 100 / 360


def add_months(start: dt.date, months: int) -> dt.date:
    """Same day of month, `months` later; a day the month lacks becomes its last day."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Row:
    due_date: dt.date
    principal_fen: int
    interest_fen: int


def level_payment(balance_fen: int, r: Fraction, n: int) -> int:
    """A = round(P·r·(1+r)^n / ((1+r)^n − 1))."""
    growth = (1 + r) ** n
    return half_up(balance_fen * r * growth / (growth - 1))


def equal_installment(
    principal_fen: int, annual_pct: Decimal, months: int, start: dt.date
) -> tuple[int, list[Row]]:
    """(A, rows): interest round(B·r) on the balance before, principal A − interest, the
    last installment's principal whatever balance remains."""
    r = monthly_rate(annual_pct)
    payment = level_payment(principal_fen, r, months)
    return payment, amortized(principal_fen, r, payment, start, 1, months, stop_when_repaid=False)


def amortized(
    balance_fen: int, r: Fraction, payment_fen: int, start: dt.date, first: int, last: int, *,
    stop_when_repaid: bool,
) -> list[Row]:  # fmt: skip
    rows = []
    for k in range(first, last + 1):
        interest = half_up(balance_fen * r)
        principal = balance_fen if k == last else min(payment_fen - interest, balance_fen)
        balance_fen -= principal
        rows.append(Row(add_months(start, k), principal, interest))
        if stop_when_repaid and balance_fen == 0:
            break
    return rows


def prepaid_principal(cash_fen: int, annual_pct: Decimal, days: int) -> tuple[int, int]:
    """(principal X, interest) of a prepayment of `cash_fen` `days` after the last due
    date: the most X with X + round(X × daily rate × days) <= cash (MONEY.md: the
    interest accrued on the prepaid principal first, then principal)."""
    q = daily_rate(annual_pct) * days
    x = int(cash_fen / (1 + q)) + 2
    while x + half_up(x * q) > cash_fen:
        x -= 1
    return x, half_up(x * q)


def prepay_before_first_due(
    principal_fen: int, annual_pct: Decimal, months: int, start: dt.date, prepaid_fen: int,
    rule: str,
) -> list[Row]:  # fmt: skip
    """The plan after prepaying `prepaid_fen` of principal before the first due date of a
    fresh equal-installment loan; the period it falls in then charges a full month on
    the lower balance."""
    r = monthly_rate(annual_pct)
    payment, rows = equal_installment(principal_fen, annual_pct, months, start)
    balance = principal_fen - prepaid_fen
    if rule == "reduce_amount":  # same term, re-amortized
        return amortized(balance, r, level_payment(balance, r, months), start, 1, months,
                         stop_when_repaid=False)  # fmt: skip
    if rule == "reduce_term":  # same payment, fewer installments
        return amortized(balance, r, payment, start, 1, months, stop_when_repaid=True)
    assert rule == "reduce_nearest", rule
    out, left = [], prepaid_fen
    for row in rows:
        if left == 0:  # back on the old path: unchanged from here
            out.append(row)
            continue
        taken = min(left, row.principal_fen)
        left -= taken
        new_principal = row.principal_fen - taken
        out.append(Row(row.due_date, new_principal, half_up(balance * r)))
        balance -= new_principal
    return out


def overdue_charges(
    rows: list[Row], annual_pct: Decimal, on: dt.date, factor: Decimal = Decimal("1.5")
) -> tuple[int, int]:
    """(penalty, compound) of a loan nothing of which was paid, booked day by day through
    `on`: each day x, round(principal of the installments due before x × annual ×
    factor / 360) and the same on their interest, once per loan per day."""
    rate = daily_rate(annual_pct) * Fraction(factor)
    penalty = compound = 0
    day = min(r.due_date for r in rows) + dt.timedelta(days=1)
    while day <= on:
        late = [r for r in rows if r.due_date < day]
        penalty += half_up(sum(r.principal_fen for r in late) * rate)
        compound += half_up(sum(r.interest_fen for r in late) * rate)
        day += dt.timedelta(days=1)
    return penalty, compound


def waterfall(
    rows: list[Row], on: dt.date, charges_fen: int, cash_fen: int
) -> tuple[int, int, int]:
    """(penalty, interest, principal) of `cash_fen` paid on `on` to a loan nothing of
    which was paid: penalty and compound, then the overdue installments' interest, then
    their principal, then the same for an installment due that day."""
    left = cash_fen
    penalty = min(left, charges_fen)
    left -= penalty
    interest = principal = 0
    for group in ([r for r in rows if r.due_date < on], [r for r in rows if r.due_date == on]):
        take = min(left, sum(r.interest_fen for r in group))
        interest, left = interest + take, left - take
        take = min(left, sum(r.principal_fen for r in group))
        principal, left = principal + take, left - take
    assert left == 0, f"{cash_fen} is more than is due"
    return penalty, interest, principal


def fen(text: str) -> int:
    """'1234.56' -> 123456."""
    whole, _, cents = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 100 + int(cents.ljust(2, "0")))


def yuan(fen_amount: int) -> str:
    sign = "-" if fen_amount < 0 else ""
    return f"{sign}{abs(fen_amount) // 100}.{abs(fen_amount) % 100:02d}"

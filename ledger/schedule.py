"""Repayment plans: the five methods of MONEY.md, to the fen.

    build_plan(P, annual %, n, method, start)
        -> Plan(terms, principal, payment, installments)
             Installment(seq, due_date, principal, interest, balance_after)

    equal_installment             A = round(P·r·(1+r)^n / ((1+r)^n − 1)); interest round(B·r),
                                  principal A − interest; the last takes what remains
    equal_principal               principal round(P/n), the last takes the remainder;
                                  interest round(B·r)
    interest_only                 interest round(P·r) each month; all principal in the last
    bullet                        one installment at start + n months:
                                  P + round(P × annual/360 × actual days)
    grace_then_equal_installment  g months of round(P·r), then equal_installment
                                  over n − g months on P

`r` is the monthly rate annual/100/12, held as an exact integer fraction
(`rates.RateRatio`): every amount is an exact rational rounded half-up once,
so the plan does not depend on a Decimal precision. `r = 0` needs no special
case except the payment, which becomes round(P/n).

A principal part never exceeds the balance before it: on a loan of a few fen
over many months the rounded parts could otherwise overshoot, and a balance
must never go negative. Such an installment is then 0 and the plan still ends
at zero.

`amortize` and `amortize_keeping_payment` work from any installment onwards on
any balance: prepayment re-amortizes through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

import msgspec

from ledger.calendar import add_months, days_between, due_dates, term_fits_calendar
from ledger.money import AMOUNT_FEN_MAX, round_fen_ratio
from ledger.rates import (
    RateError,
    RateRatio,
    check_annual_rate_pct,
    daily_rate_ratio,
    monthly_rate_ratio,
)

MONTHS_MAX = 600  # 50 years: beyond any retail or business loan term
# Limit on cached annuity factors: one per (rate, number of installments) seen lately.
ANNUITY_CACHE_ENTRIES_MAX = 1024


class ScheduleError(ValueError):
    """Inputs a plan cannot be built from; `code` is stable, `detail` is for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class RepaymentMethod(StrEnum):
    """How principal and interest are spread over the term; values are the wire names."""

    EQUAL_INSTALLMENT = "equal_installment"  # 等额本息
    EQUAL_PRINCIPAL = "equal_principal"  # 等额本金
    INTEREST_ONLY = "interest_only"  # 先息后本
    BULLET = "bullet"  # 利随本清
    GRACE_THEN_EQUAL_INSTALLMENT = "grace_then_equal_installment"  # 宽限期只收息, 再等额本息


class LoanTerms(msgspec.Struct, frozen=True):
    """What the contract fixes: method, annual rate in percent, term, drawdown date, grace."""

    method: RepaymentMethod
    annual_rate_pct: Decimal
    months: int
    start: date
    grace_months: int = 0

    @property
    def monthly_rate(self) -> RateRatio:
        """The exact monthly rate annual / 100 / 12."""
        return monthly_rate_ratio(self.annual_rate_pct)

    @property
    def maturity(self) -> date:
        """The last due date: start + months, month rule."""
        return add_months(self.start, self.months)


class Installment(msgspec.Struct, frozen=True):
    """One due date of a plan and what falls due on it, in fen."""

    seq: int
    due_date: date
    principal_fen: int
    interest_fen: int
    balance_after_fen: int

    @property
    def total_fen(self) -> int:
        """Principal plus interest due on this date."""
        return self.principal_fen + self.interest_fen


class Plan(msgspec.Struct, frozen=True):
    """A loan's installments, with the terms they were computed from.

    `payment_fen` is the amount the method keeps level: the payment A
    (equal_installment; grace_then_equal_installment after the grace), the
    principal part (equal_principal), the monthly interest (interest_only), the
    single total (bullet). `prepaid_fen` is principal repaid outside the plan,
    so that principal parts + prepaid_fen = principal_fen always.
    """

    terms: LoanTerms
    principal_fen: int
    payment_fen: int
    installments: tuple[Installment, ...]
    prepaid_fen: int = 0

    @property
    def total_interest_fen(self) -> int:
        """Interest of all installments."""
        return sum(installment.interest_fen for installment in self.installments)

    @property
    def total_fen(self) -> int:
        """Everything the installments ask for."""
        return sum(installment.total_fen for installment in self.installments)


def build_plan(
    principal_fen: int,
    annual_rate_pct: Decimal,
    months: int,
    method: RepaymentMethod | str,
    start: date,
    *,
    grace_months: int = 0,
) -> Plan:
    """The plan of a loan of `principal_fen` drawn down on `start`; see the module docstring.

    Raises ScheduleError on inputs outside the engine's limits.
    """
    terms = make_terms(
        principal_fen, annual_rate_pct, months, method, start, grace_months=grace_months
    )
    installments, payment_fen = amortize(terms, principal_fen, first_seq=1)
    plan = Plan(terms, principal_fen, payment_fen, installments)
    check_plan(plan)
    return plan


def make_terms(
    principal_fen: int,
    annual_rate_pct: Decimal,
    months: int,
    method: RepaymentMethod | str,
    start: date,
    *,
    grace_months: int = 0,
) -> LoanTerms:
    """Validated LoanTerms; ScheduleError names the first input that is wrong."""
    if not _is_int(principal_fen) or not 0 < principal_fen <= AMOUNT_FEN_MAX:
        raise ScheduleError("PRINCIPAL_INVALID", "principal must be between 0.01 and the limit")
    try:
        check_annual_rate_pct(annual_rate_pct)
    except RateError as exc:
        raise ScheduleError(exc.code, exc.detail) from exc
    if not _is_int(months) or not 1 <= months <= MONTHS_MAX:
        raise ScheduleError("MONTHS_INVALID", f"months must be between 1 and {MONTHS_MAX}")
    try:
        method = RepaymentMethod(method)
    except ValueError as exc:
        names = ", ".join(RepaymentMethod)
        raise ScheduleError("METHOD_UNKNOWN", f"method must be one of: {names}") from exc
    _check_grace(method, months, grace_months)
    if not isinstance(start, date) or isinstance(start, datetime):
        raise ScheduleError("START_INVALID", "start must be a date")
    if not term_fits_calendar(start, months):
        raise ScheduleError("START_INVALID", "the term ends beyond the calendar")
    return LoanTerms(method, annual_rate_pct, months, start, grace_months)


def _check_grace(method: RepaymentMethod, months: int, grace_months: int) -> None:
    if not _is_int(grace_months) or grace_months < 0:
        raise ScheduleError("GRACE_INVALID", "grace months must be a whole number >= 0")
    if method is RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT:
        if not 1 <= grace_months < months:
            raise ScheduleError("GRACE_INVALID", "grace months must be at least 1 and below months")
    elif grace_months != 0:
        raise ScheduleError("GRACE_NOT_APPLICABLE", f"method {method} has no grace months")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def amortize(
    terms: LoanTerms, balance_fen: int, first_seq: int, last_seq: int | None = None
) -> tuple[tuple[Installment, ...], int]:
    """Spread `balance_fen` by the terms' method over installments first_seq..last_seq.

    `last_seq` defaults to the term (`terms.months`); a plan shortened by a
    prepayment passes its own last seq. Returns the installments and the level
    amount (`Plan.payment_fen`). A bullet loan has one installment, so
    `first_seq` must be 1 for it.
    """
    assert balance_fen > 0, balance_fen
    method = terms.method
    if method is RepaymentMethod.BULLET:
        assert first_seq == 1, first_seq
        installment = bullet_installment(terms, balance_fen)
        return (installment,), installment.total_fen
    dates = _dates_between(terms, first_seq, last_seq)
    rate = terms.monthly_rate
    if method is RepaymentMethod.EQUAL_PRINCIPAL:
        part_fen = round_fen_ratio(balance_fen, len(dates))
        rows = _amortized_rows(
            balance_fen,
            rate,
            first_seq,
            dates,
            level_fen=part_fen,
            level_is_payment=False,
            stop_when_repaid=False,
        )
        return rows, part_fen
    if method is RepaymentMethod.INTEREST_ONLY:
        rows = _interest_rows(balance_fen, rate, first_seq, dates, repay_last=True)
        return rows, rate.interest_fen(balance_fen)
    return _grace_then_level_rows(terms, balance_fen, first_seq, dates, None)


def amortize_keeping_payment(
    terms: LoanTerms, balance_fen: int, first_seq: int, last_seq: int, payment_fen: int
) -> tuple[Installment, ...]:
    """Repay `balance_fen` from installment `first_seq` keeping the level amount: fewer rows.

    Only for the methods whose level amount repays principal (equal_installment,
    equal_principal, grace_then_equal_installment); remaining grace months stay
    interest-only. The plan never grows: the last available installment takes
    whatever balance remains.
    """
    assert balance_fen > 0 and payment_fen >= 0, (balance_fen, payment_fen)
    dates = _dates_between(terms, first_seq, last_seq)
    rate = terms.monthly_rate
    if terms.method is RepaymentMethod.EQUAL_PRINCIPAL:
        return _amortized_rows(
            balance_fen,
            rate,
            first_seq,
            dates,
            level_fen=payment_fen,
            level_is_payment=False,
            stop_when_repaid=True,
        )
    assert terms.method in _LEVEL_PAYMENT_METHODS, terms.method
    rows, _ = _grace_then_level_rows(terms, balance_fen, first_seq, dates, payment_fen)
    return rows


def _grace_then_level_rows(
    terms: LoanTerms,
    balance_fen: int,
    first_seq: int,
    dates: Sequence[date],
    kept_payment_fen: int | None,
) -> tuple[tuple[Installment, ...], int]:
    # The grace months left (interest only), then level payments: a fresh payment over
    # the months that remain, or a kept payment until the balance is repaid.
    rate = terms.monthly_rate
    grace_count = max(0, terms.grace_months - first_seq + 1)
    assert grace_count < len(dates), (grace_count, len(dates))
    grace_rows = _interest_rows(balance_fen, rate, first_seq, dates[:grace_count], repay_last=False)
    if kept_payment_fen is None:
        payment_fen = level_payment_fen(balance_fen, rate, len(dates) - grace_count)
    else:
        payment_fen = kept_payment_fen
    level_rows = _amortized_rows(
        balance_fen,
        rate,
        first_seq + grace_count,
        dates[grace_count:],
        level_fen=payment_fen,
        level_is_payment=True,
        stop_when_repaid=kept_payment_fen is not None,
    )
    return grace_rows + level_rows, payment_fen


def _dates_between(terms: LoanTerms, first_seq: int, last_seq: int | None) -> tuple[date, ...]:
    # Due dates of installments first_seq..last_seq (both included), from the cached list.
    last_seq = terms.months if last_seq is None else last_seq
    assert 1 <= first_seq <= last_seq <= terms.months, (first_seq, last_seq, terms.months)
    return due_dates(terms.start, terms.months)[first_seq - 1 : last_seq]


_LEVEL_PAYMENT_METHODS = (
    RepaymentMethod.EQUAL_INSTALLMENT,
    RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT,
)


def bullet_installment(terms: LoanTerms, balance_fen: int) -> Installment:
    """The single installment of a bullet loan: interest at the daily rate over the term."""
    maturity = terms.maturity
    interest_fen = period_interest_fen(terms, balance_fen)
    return Installment(1, maturity, balance_fen, interest_fen, 0)


def period_interest_fen(terms: LoanTerms, balance_before_fen: int) -> int:
    """Interest of one whole installment period on the balance before it.

    A regular month charges `B·r` whatever its length; a bullet loan's single
    period is not a regular month, so it charges `B × annual/360 × actual days`.
    """
    if terms.method is RepaymentMethod.BULLET:
        days = days_between(terms.start, terms.maturity)
        return daily_rate_ratio(terms.annual_rate_pct, days).interest_fen(balance_before_fen)
    return terms.monthly_rate.interest_fen(balance_before_fen)


def level_payment_fen(balance_fen: int, rate: RateRatio, count: int) -> int:
    """The equal-installment payment round(B·r·(1+r)^n / ((1+r)^n − 1)); round(B/n) at r = 0."""
    assert balance_fen > 0 and count >= 1, (balance_fen, count)
    if rate.numerator == 0:
        return round_fen_ratio(balance_fen, count)
    factor_numerator, factor_denominator = _annuity_factor(rate, count)
    return round_fen_ratio(balance_fen * factor_numerator, factor_denominator)


@lru_cache(maxsize=ANNUITY_CACHE_ENTRIES_MAX)
def _annuity_factor(rate: RateRatio, count: int) -> tuple[int, int]:
    # With r = a/d: r(1+r)^n / ((1+r)^n − 1) = a·(d+a)^n / (d·((d+a)^n − d^n)), exactly.
    # Cached: (d+a)^n has thousands of digits at n = 600, and most loans share a few rates.
    a, d = rate
    growth = (d + a) ** count
    return a * growth, d * (growth - d**count)


def _interest_rows(
    balance_fen: int,
    rate: RateRatio,
    first_seq: int,
    dates: Sequence[date],
    *,
    repay_last: bool,
) -> tuple[Installment, ...]:
    # Interest-only months on a constant balance; the last may repay it all.
    interest_fen = rate.interest_fen(balance_fen)
    rows = [
        Installment(first_seq + i, due, 0, interest_fen, balance_fen) for i, due in enumerate(dates)
    ]
    if repay_last and rows:
        last = rows[-1]
        rows[-1] = Installment(last.seq, last.due_date, balance_fen, interest_fen, 0)
    return tuple(rows)


def _amortized_rows(
    balance_fen: int,
    rate: RateRatio,
    first_seq: int,
    dates: Sequence[date],
    *,
    level_fen: int,
    level_is_payment: bool,
    stop_when_repaid: bool,
) -> tuple[Installment, ...]:
    # Interest on the balance before each installment; its principal part is what the
    # level payment leaves after interest (equal installments) or the level part itself
    # (equal principal), never more than the balance; the last takes what remains.
    rows = []
    last_index = len(dates) - 1
    numerator, denominator = rate  # unpacked once: this loop is the drawdown's hot path
    for index, due in enumerate(dates):
        interest_fen = round_fen_ratio(balance_fen * numerator, denominator)
        if index == last_index:
            principal_fen = balance_fen
        else:
            part_fen = level_fen - interest_fen if level_is_payment else level_fen
            principal_fen = min(part_fen, balance_fen)
        balance_fen -= principal_fen
        rows.append(Installment(first_seq + index, due, principal_fen, interest_fen, balance_fen))
        if stop_when_repaid and balance_fen == 0:
            break
    return tuple(rows)


def check_plan(plan: Plan) -> None:
    """Assert the invariants every plan keeps, whatever built or changed it.

    Principal parts plus prepaid principal make the principal; no part is
    negative; balances never rise and end at zero; seqs run 1, 2, ... and due
    dates strictly increase.
    """
    installments = plan.installments
    assert installments, plan
    assert 0 <= plan.prepaid_fen < plan.principal_fen, plan.prepaid_fen
    principal_sum_fen = 0
    previous_balance_fen = plan.principal_fen
    previous_due = plan.terms.start
    for seq, installment in enumerate(installments, start=1):
        assert installment.seq == seq, (seq, installment)
        assert installment.due_date > previous_due, installment
        assert installment.principal_fen >= 0 and installment.interest_fen >= 0, installment
        assert 0 <= installment.balance_after_fen <= previous_balance_fen, installment
        if plan.prepaid_fen == 0:  # without prepayments each balance follows from the last
            balance_fen = previous_balance_fen - installment.principal_fen
            assert installment.balance_after_fen == balance_fen, installment
        principal_sum_fen += installment.principal_fen
        previous_balance_fen = installment.balance_after_fen
        previous_due = installment.due_date
    assert previous_balance_fen == 0, installments[-1]
    assert principal_sum_fen + plan.prepaid_fen == plan.principal_fen, principal_sum_fen

"""Properties every repayment plan and every prepayment keeps, over random loans.

The oracles here are independent of `ledger`: due dates from the stdlib
`calendar`, interest from `fractions.Fraction` with an explicit half-up.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.money import round_fen, round_fen_ratio
from ledger.overdue import InstallmentStatus, LoanState
from ledger.prepayment import PrepaymentRule, prepay
from ledger.schedule import Plan, RepaymentMethod, build_plan

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def half_up(value: Fraction) -> int:
    """Independent half-up rounding of a non-negative exact fraction."""
    assert value >= 0
    whole = value.numerator // value.denominator
    return whole + (1 if value - whole >= Fraction(1, 2) else 0)


def month_rule(start: date, months: int) -> date:
    """Same day of month `months` later, the month's last day if it lacks the day."""
    year, month_index = divmod(start.month - 1 + months, 12)
    year += start.year
    last_day = calendar.monthrange(year, month_index + 1)[1]
    return date(year, month_index + 1, min(start.day, last_day))


@dataclass(frozen=True)
class Loan:
    principal_fen: int
    annual_rate_pct: Decimal
    months: int
    method: RepaymentMethod
    start: date
    grace_months: int

    def plan(self) -> Plan:
        return build_plan(
            self.principal_fen,
            self.annual_rate_pct,
            self.months,
            self.method,
            self.start,
            grace_months=self.grace_months,
        )


rates_pct = st.one_of(
    st.just(Decimal(0)),
    st.integers(min_value=0, max_value=2_400_000).map(lambda n: Decimal(n).scaleb(-5)),
    st.sampled_from([Decimal("3.45"), Decimal("4.9"), Decimal("24"), Decimal("36")]),
)


@st.composite
def start_dates(draw: st.DrawFn) -> date:
    """Any date, with the 28th–31st (and so month ends and Feb 29) drawn often."""
    if draw(st.booleans()):
        return draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31)))
    year = draw(st.integers(min_value=2000, max_value=2090))
    month = draw(st.integers(min_value=1, max_value=12))
    day = draw(st.integers(min_value=28, max_value=31))
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


@st.composite
def loans(draw: st.DrawFn, methods: tuple[RepaymentMethod, ...] = tuple(RepaymentMethod)) -> Loan:
    method = draw(st.sampled_from(methods))
    grace = method is RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT
    months = draw(st.integers(min_value=2 if grace else 1, max_value=480))
    grace_months = draw(st.integers(min_value=1, max_value=months - 1)) if grace else 0
    principal_fen = draw(
        st.one_of(
            st.integers(min_value=1, max_value=10_000),  # tiny: rounding overshoot territory
            st.integers(min_value=1, max_value=10**11),
        )
    )
    return Loan(principal_fen, draw(rates_pct), months, method, draw(start_dates()), grace_months)


def monthly_interest_fen(balance_fen: int, annual_rate_pct: Decimal) -> int:
    return half_up(Fraction(balance_fen) * Fraction(annual_rate_pct) / 1200)


@PROPERTY_SETTINGS
@given(loans())
def test_plan_invariants(loan: Loan) -> None:
    plan = loan.plan()
    installments = plan.installments
    assert len(installments) == (1 if loan.method is RepaymentMethod.BULLET else loan.months)
    assert sum(i.principal_fen for i in installments) == loan.principal_fen
    balance_fen = loan.principal_fen
    for seq, installment in enumerate(installments, start=1):
        assert installment.seq == seq
        assert installment.principal_fen >= 0 and installment.interest_fen >= 0
        assert installment.balance_after_fen == balance_fen - installment.principal_fen
        assert 0 <= installment.balance_after_fen <= balance_fen  # never rises
        if loan.method is not RepaymentMethod.BULLET:
            assert installment.interest_fen == monthly_interest_fen(
                balance_fen, loan.annual_rate_pct
            )
        balance_fen = installment.balance_after_fen
    assert balance_fen == 0


@PROPERTY_SETTINGS
@given(loans())
def test_due_dates_follow_the_month_rule(loan: Loan) -> None:
    plan = loan.plan()
    if loan.method is RepaymentMethod.BULLET:
        assert [i.due_date for i in plan.installments] == [month_rule(loan.start, loan.months)]
        return
    for installment in plan.installments:
        assert installment.due_date == month_rule(loan.start, installment.seq)
        last_day = calendar.monthrange(installment.due_date.year, installment.due_date.month)[1]
        assert installment.due_date.day in (loan.start.day, last_day)


@PROPERTY_SETTINGS
@given(loans())
def test_method_shapes(loan: Loan) -> None:
    plan = loan.plan()
    installments = plan.installments
    method = loan.method
    if method is RepaymentMethod.BULLET:
        days = (installments[0].due_date - loan.start).days
        expected = Fraction(loan.principal_fen) * Fraction(loan.annual_rate_pct) * days / 36000
        assert installments[0].interest_fen == half_up(expected)
    elif method is RepaymentMethod.INTEREST_ONLY:
        assert all(i.principal_fen == 0 for i in installments[:-1])
    elif method is RepaymentMethod.EQUAL_PRINCIPAL:
        part_fen = half_up(Fraction(loan.principal_fen, loan.months))
        # round(P/n) each, unless fewer fen than that remain (tiny loans over long terms).
        assert all(
            i.principal_fen == part_fen or i.balance_after_fen == 0 for i in installments[:-1]
        )
    else:
        grace = installments[: loan.grace_months]
        assert all(i.principal_fen == 0 for i in grace)
        level = installments[loan.grace_months : -1]
        # Every level installment but the last pays A, unless the balance ran out first.
        assert all(i.total_fen == plan.payment_fen or i.balance_after_fen == 0 for i in level)


@PROPERTY_SETTINGS
@given(st.integers(min_value=-(10**15), max_value=10**15), st.integers(1, 10**9))
def test_round_fen_ratio_is_round_fen(numerator: int, denominator: int) -> None:
    # 50 digits hold the quotient exactly at a tie (x.5) and far from .5 otherwise.
    with localcontext() as context:
        context.prec = 50
        exact = Decimal(numerator) / Decimal(denominator)
    assert round_fen_ratio(numerator, denominator) == round_fen(exact)


# --- prepayment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepaymentCase:
    loan: Loan
    paid_count: int  # installments 1..paid_count settled
    on: date
    principal_fen: int


@st.composite
def prepayment_cases(
    draw: st.DrawFn, methods: tuple[RepaymentMethod, ...] = tuple(RepaymentMethod)
) -> PrepaymentCase:
    loan = draw(loans(methods).filter(lambda loan: loan.principal_fen >= 2))
    plan = loan.plan()
    installments = plan.installments
    paid_count = draw(st.integers(min_value=0, max_value=len(installments) - 1))
    outstanding_fen = sum(i.principal_fen for i in installments[paid_count:])
    if outstanding_fen < 2:
        paid_count = 0
        outstanding_fen = loan.principal_fen
    period_start = loan.start if paid_count == 0 else installments[paid_count - 1].due_date
    period_days = (installments[paid_count].due_date - period_start).days
    on = period_start + timedelta(days=draw(st.integers(min_value=0, max_value=period_days - 1)))
    principal_fen = draw(st.integers(min_value=1, max_value=outstanding_fen - 1))
    return PrepaymentCase(loan, paid_count, on, principal_fen)


def state_of(plan: Plan, paid_count: int) -> LoanState:
    settled = tuple(
        InstallmentStatus(i.principal_fen, i.interest_fen) for i in plan.installments[:paid_count]
    )
    untouched = (InstallmentStatus(),) * (len(plan.installments) - paid_count)
    return LoanState(plan, settled + untouched)


def common_prepayment_checks(
    case: PrepaymentCase, old: Plan, new: Plan, *, balances_below_old: bool = True
) -> None:
    """Checks every rule passes; `balances_below_old` holds for all but reduce_amount,
    whose re-spread may sit a few fen above the old path on a loan of a few fen."""
    assert new.installments[: case.paid_count] == old.installments[: case.paid_count]
    assert new.prepaid_fen == case.principal_fen
    assert sum(i.principal_fen for i in new.installments) + case.principal_fen == old.principal_fen
    previous_fen = old.principal_fen
    for old_row, new_row in zip(old.installments, new.installments, strict=False):
        assert new_row.seq == old_row.seq and new_row.due_date == old_row.due_date
        assert new_row.principal_fen >= 0 and new_row.interest_fen >= 0
        if balances_below_old:
            assert new_row.balance_after_fen <= old_row.balance_after_fen
        assert new_row.balance_after_fen <= previous_fen  # balances never rise
        previous_fen = new_row.balance_after_fen
    assert new.installments[-1].balance_after_fen == 0


@PROPERTY_SETTINGS
@given(prepayment_cases())
def test_reduce_nearest_changes_only_what_it_reduces(case: PrepaymentCase) -> None:
    old = case.loan.plan()
    result = prepay(state_of(old, case.paid_count), case.on, case.principal_fen)
    new = result.plan
    common_prepayment_checks(case, old, new)
    assert len(new.installments) == len(old.installments)
    reduced = [
        index
        for index, (old_row, new_row) in enumerate(
            zip(old.installments, new.installments, strict=True)
        )
        if new_row.principal_fen < old_row.principal_fen
    ]
    assert reduced, "some installment must carry the reduction"
    last_reduced = reduced[-1]
    # Nearest first: every installment before the last reduced one gave all it had.
    for index in range(case.paid_count, last_reduced):
        assert new.installments[index].principal_fen == 0
    # Later installments are untouched; between, only reduced or zero-principal ones change.
    assert new.installments[last_reduced + 1 :] == old.installments[last_reduced + 1 :]
    for index in range(case.paid_count, last_reduced + 1):
        old_row, new_row = old.installments[index], new.installments[index]
        if new_row != old_row:
            assert index in reduced or old_row.principal_fen == 0
    taken_fen = sum(
        old.installments[index].principal_fen - new.installments[index].principal_fen
        for index in reduced
    )
    assert taken_fen == case.principal_fen


_TERM_METHODS = (
    RepaymentMethod.EQUAL_INSTALLMENT,
    RepaymentMethod.EQUAL_PRINCIPAL,
    RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT,
)


@PROPERTY_SETTINGS
@given(prepayment_cases(_TERM_METHODS))
def test_reduce_term_shortens(case: PrepaymentCase) -> None:
    old = case.loan.plan()
    state = state_of(old, case.paid_count)
    new = prepay(state, case.on, case.principal_fen, PrepaymentRule.REDUCE_TERM).plan
    common_prepayment_checks(case, old, new)
    assert len(new.installments) <= len(old.installments)
    if case.principal_fen >= old.installments[-1].principal_fen:
        assert len(new.installments) < len(old.installments)
    assert new.payment_fen == old.payment_fen


@PROPERTY_SETTINGS
@given(prepayment_cases())
def test_reduce_amount_keeps_length(case: PrepaymentCase) -> None:
    old = case.loan.plan()
    state = state_of(old, case.paid_count)
    new = prepay(state, case.on, case.principal_fen, PrepaymentRule.REDUCE_AMOUNT).plan
    common_prepayment_checks(case, old, new, balances_below_old=False)
    assert len(new.installments) == len(old.installments)
    assert new.installments[-1].due_date == old.installments[-1].due_date


@PROPERTY_SETTINGS
@given(prepayment_cases(), st.sampled_from(list(PrepaymentRule)))
def test_prepayment_interest_is_daily_on_the_prepaid_principal(
    case: PrepaymentCase, rule: PrepaymentRule
) -> None:
    old = case.loan.plan()
    if rule is PrepaymentRule.REDUCE_TERM and case.loan.method not in _TERM_METHODS:
        return
    result = prepay(state_of(old, case.paid_count), case.on, case.principal_fen, rule)
    since = (
        case.loan.start if case.paid_count == 0 else old.installments[case.paid_count - 1].due_date
    )
    days = (case.on - since).days
    expected = Fraction(case.principal_fen) * Fraction(case.loan.annual_rate_pct) * days / 36000
    assert result.interest_fen == half_up(expected)
    assert result.principal_fen == case.principal_fen

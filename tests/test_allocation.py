"""The waterfall of a payment of what is due, and the settlement of a payoff.

Property tests run over random plans of every method, random histories
(missed installments, partial payments, prepayments) and random payment days,
including due dates themselves and the drawdown day. Two worked examples are
computed by hand. No database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.allocation import (
    Allocation,
    AllocationError,
    allocate_due,
    due_total_fen,
    settle_payoff,
)
from ledger.overdue import (
    InstallmentStatus,
    LoanState,
    accrue_overdue,
    days_past_due,
    fresh_state,
    overdue_charges,
)
from ledger.prepayment import PrepaymentRule, payoff_quote, prepay
from ledger.schedule import Installment, Plan, RepaymentMethod, build_plan, check_plan

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MULTIPLIERS = (Decimal("1.3"), Decimal("1.4"), Decimal("1.5"))

# --- strategies -------------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    method = draw(st.sampled_from(tuple(RepaymentMethod)))
    grace = method is RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT
    months = draw(st.integers(min_value=2 if grace else 1, max_value=24))
    grace_months = draw(st.integers(min_value=1, max_value=months - 1)) if grace else 0
    principal_fen = draw(
        st.one_of(
            st.integers(1, 1_000),  # tiny: installments with zero parts
            st.integers(1_000, 10**10),
            st.integers(10**5, 10**8),
        )
    )
    rate_pct = draw(
        st.one_of(
            st.sampled_from([Decimal(0), Decimal("3.45"), Decimal("12"), Decimal("24")]),
            st.integers(0, 3_600_000).map(lambda n: Decimal(n).scaleb(-5)),
        )
    )
    start = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31)))
    if draw(st.booleans()):  # month ends often: due dates then move around
        start = start.replace(day=1) + timedelta(days=draw(st.integers(27, 30)))
    return build_plan(principal_fen, rate_pct, months, method, start, grace_months=grace_months)


@st.composite
def days_of(draw: st.DrawFn, plan: Plan, after: date) -> date:
    """A day on or after `after`: any day up to well past maturity, or exactly a due date."""
    end = plan.installments[-1].due_date + timedelta(days=400)
    dues = [i.due_date for i in plan.installments if i.due_date >= after]
    if dues and draw(st.booleans()):
        return draw(st.sampled_from(dues))
    return after + timedelta(days=draw(st.integers(0, max(0, (end - after).days))))


@dataclass(frozen=True)
class Case:
    """A state with overdue charges booked through `on`, as the service has it."""

    state: LoanState
    on: date
    multiplier: Decimal


@st.composite
def cases(draw: st.DrawFn) -> Case:
    plan = draw(plans())
    multiplier = draw(st.sampled_from(MULTIPLIERS))
    state = fresh_state(plan)
    day = plan.terms.start
    for _ in range(draw(st.integers(0, 3))):  # earlier days: missed, paid in part, prepaid
        day = draw(days_of(state.plan, day))
        state = accrue_overdue(state, day, multiplier)
        due_fen = due_total_fen(state, day)
        kind = draw(st.sampled_from(["miss", "pay", "pay", "prepay"]))
        if kind == "pay" and due_fen:  # a partial (or full) payment of what is due
            state = allocate_due(state, day, draw(st.integers(1, due_fen))).state
        elif kind == "prepay":  # settle what is due, then prepay part of what is not
            if due_fen:
                state = allocate_due(state, day, due_fen).state
            state = _maybe_prepay(draw, state, day)
    on = draw(days_of(state.plan, day))
    return Case(accrue_overdue(state, on, multiplier), on, multiplier)


def _maybe_prepay(draw: st.DrawFn, state: LoanState, day: date) -> LoanState:
    future = [i for i in state.plan.installments if i.due_date > day]
    outstanding_fen = sum(i.principal_fen for i in future)
    if outstanding_fen < 2:
        return state
    principal_fen = draw(st.integers(1, outstanding_fen - 1))
    rules = [PrepaymentRule.REDUCE_NEAREST, PrepaymentRule.REDUCE_AMOUNT]
    if state.plan.terms.method not in (RepaymentMethod.INTEREST_ONLY, RepaymentMethod.BULLET):
        rules.append(PrepaymentRule.REDUCE_TERM)
    return prepay(state, day, principal_fen, draw(st.sampled_from(rules))).state


# --- oracles ----------------------------------------------------------------------------------

PENALTY, INTEREST, PRINCIPAL = "penalty", "interest", "principal"


def waterfall_slots(state: LoanState, on: date) -> list[tuple[str, int]]:
    """(kind, unpaid fen) in the order MONEY.md's waterfall pays them, oldest first in each."""
    pairs = list(zip(state.plan.installments, state.statuses, strict=True))
    due = [(i, s) for i, s in pairs if i.due_date <= on]
    slots: list[tuple[str, int]] = []
    for _, s in due:  # 1. penalty + compound
        slots += [(PENALTY, s.penalty_unpaid_fen), (PENALTY, s.compound_unpaid_fen)]
    for group in ([p for p in due if p[0].due_date < on], [p for p in due if p[0].due_date == on]):
        # 2./4. interest of the group, then 3./5. its principal
        slots += [(INTEREST, i.interest_fen - s.interest_paid_fen) for i, s in group]
        slots += [(PRINCIPAL, i.principal_fen - s.principal_paid_fen) for i, s in group]
    return slots


def fully_paid(item: Installment, status: InstallmentStatus) -> bool:
    return (
        status.principal_paid_fen == item.principal_fen
        and status.interest_paid_fen == item.interest_fen
        and status.penalty_unpaid_fen == 0
        and status.compound_unpaid_fen == 0
    )


def due_case(case: Case) -> bool:
    return due_total_fen(case.state, case.on) > 0


# --- allocate_due: properties -----------------------------------------------------------------


@PROPERTY_SETTINGS
@given(cases().filter(due_case), st.data())
def test_partial_payment_follows_the_waterfall(case: Case, data: st.DataObject) -> None:
    state, on = case.state, case.on
    amount_fen = data.draw(st.integers(1, due_total_fen(state, on)))
    paid = allocate_due(state, on, amount_fen)

    assert paid.total_fen == amount_fen
    assert min(paid.penalty_fen, paid.interest_fen, paid.principal_fen) >= 0
    before, after = waterfall_slots(state, on), waterfall_slots(paid.state, on)
    taken = [(kind, b - a) for (kind, b), (_, a) in zip(before, after, strict=True)]
    assert all(fen >= 0 for _, fen in taken)
    for kind, part_fen in ((PENALTY, paid.penalty_fen), (INTEREST, paid.interest_fen)):
        assert sum(fen for k, fen in taken if k == kind) == part_fen
    assert sum(fen for k, fen in taken if k == PRINCIPAL) == paid.principal_fen
    # Strict order: a slot gets money only when every slot before it is paid off.
    for position, (_, fen) in enumerate(taken):
        if fen:
            assert all(unpaid == 0 for _, unpaid in after[:position]), (position, after)
    # Penalty paid per installment is what left its two charges.
    assert sum(paid.penalty_paid_by_installment) == paid.penalty_fen
    for old, new, fen in zip(
        state.statuses, paid.state.statuses, paid.penalty_paid_by_installment, strict=True
    ):
        drop = (old.penalty_unpaid_fen + old.compound_unpaid_fen) - (
            new.penalty_unpaid_fen + new.compound_unpaid_fen
        )
        assert drop == fen
    assert due_total_fen(paid.state, on) == due_total_fen(state, on) - amount_fen


@PROPERTY_SETTINGS
@given(cases().filter(due_case), st.data())
def test_nothing_not_yet_due_changes(case: Case, data: st.DataObject) -> None:
    state, on = case.state, case.on
    paid = allocate_due(state, on, data.draw(st.integers(1, due_total_fen(state, on))))
    assert paid.state.plan == state.plan
    for item, old, new in zip(
        state.plan.installments, state.statuses, paid.state.statuses, strict=True
    ):
        if item.due_date > on:
            assert new == old
        assert new.accrued_through == old.accrued_through


@PROPERTY_SETTINGS
@given(cases().filter(due_case), st.data())
def test_two_payments_the_same_day_split_like_one(case: Case, data: st.DataObject) -> None:
    state, on = case.state, case.on
    due_fen = due_total_fen(state, on)
    first_fen = data.draw(st.integers(1, due_fen))
    once = allocate_due(state, on, first_fen)
    if first_fen < due_fen:
        second_fen = data.draw(st.integers(1, due_fen - first_fen))
        twice = allocate_due(once.state, on, second_fen)
        whole = allocate_due(state, on, first_fen + second_fen)
        assert twice.state == whole.state
        assert once.penalty_fen + twice.penalty_fen == whole.penalty_fen
        assert once.interest_fen + twice.interest_fen == whole.interest_fen
        assert once.principal_fen + twice.principal_fen == whole.principal_fen


@PROPERTY_SETTINGS
@given(cases().filter(due_case))
def test_paying_everything_due_settles_it(case: Case) -> None:
    state, on = case.state, case.on
    due_fen = due_total_fen(state, on)
    paid = allocate_due(state, on, due_fen)
    assert paid.total_fen == due_fen
    for item, status in zip(paid.state.plan.installments, paid.state.statuses, strict=True):
        if item.due_date <= on:
            assert fully_paid(item, status)
    assert days_past_due(paid.state, on) == 0
    assert due_total_fen(paid.state, on) == 0
    assert overdue_charges(paid.state, on, case.multiplier).total_fen == 0
    with pytest.raises(AllocationError) as refused:
        allocate_due(paid.state, on, 1)
    assert refused.value.code == "NOTHING_DUE"


@PROPERTY_SETTINGS
@given(cases().filter(due_case), st.sampled_from([0, -1, -(10**6), True, False]))
def test_bad_amounts_are_refused(case: Case, amount: int) -> None:
    with pytest.raises(AllocationError) as refused:
        allocate_due(case.state, case.on, amount)
    assert refused.value.code == "AMOUNT_INVALID"
    with pytest.raises(AllocationError) as refused:
        allocate_due(case.state, case.on, due_total_fen(case.state, case.on) + 1)
    assert refused.value.code == "AMOUNT_EXCEEDS_DUE"


@PROPERTY_SETTINGS
@given(plans(), st.data())
def test_nothing_due_before_the_first_due_date(plan: Plan, data: st.DataObject) -> None:
    first_due = plan.installments[0].due_date
    on = plan.terms.start + timedelta(
        days=data.draw(st.integers(0, (first_due - plan.terms.start).days - 1))
    )
    state = accrue_overdue(fresh_state(plan), on)
    assert due_total_fen(state, on) == 0
    with pytest.raises(AllocationError) as refused:
        allocate_due(state, on, 1)
    assert refused.value.code == "NOTHING_DUE"


@PROPERTY_SETTINGS
@given(cases())
def test_charges_must_be_booked_through_the_day(case: Case) -> None:
    # Booked through an earlier day only: paying now would lose the penalty since then.
    state, on = case.state, case.on
    later = on + timedelta(days=1)
    late = [
        i
        for i, s in zip(state.plan.installments, state.statuses, strict=True)
        if i.due_date < later
        and (i.principal_fen, i.interest_fen) != (s.principal_paid_fen, s.interest_paid_fen)
    ]
    if not late:
        return
    with pytest.raises(AllocationError) as refused:
        allocate_due(state, later, 1)
    assert refused.value.code == "CHARGES_NOT_BOOKED"
    with pytest.raises(AllocationError) as refused:
        settle_payoff(state, later, payoff_quote(state, later, case.multiplier))
    assert refused.value.code == "CHARGES_NOT_BOOKED"


# --- settle_payoff: properties ----------------------------------------------------------------


@PROPERTY_SETTINGS
@given(cases())
def test_payoff_settles_everything(case: Case) -> None:
    state, on = case.state, case.on
    quote = payoff_quote(state, on, case.multiplier)
    paid = settle_payoff(state, on, quote)
    plan = paid.state.plan

    check_plan(plan)  # parts + prepaid = principal, balances end at zero, dates increase
    assert sum(i.principal_fen for i in plan.installments) + plan.prepaid_fen == plan.principal_fen
    assert plan.installments[-1].balance_after_fen == 0
    assert all(
        fully_paid(i, s) for i, s in zip(plan.installments, paid.state.statuses, strict=True)
    )
    assert paid.penalty_fen == quote.penalty_fen + quote.compound_fen
    assert paid.interest_fen == quote.interest_fen + quote.due_interest_fen
    assert paid.principal_fen == quote.principal_fen + quote.due_principal_fen
    assert paid.total_fen == quote.total_fen
    assert sum(paid.penalty_paid_by_installment) == paid.penalty_fen
    assert len(paid.penalty_paid_by_installment) == len(plan.installments)
    # What paid principal before plus this payoff is the whole loan, less prepayments.
    paid_before_fen = sum(s.principal_paid_fen for s in state.statuses)
    assert paid_before_fen + paid.principal_fen + plan.prepaid_fen == plan.principal_fen
    # Installments due on or before the day stay as they were.
    due = [i for i in state.plan.installments if i.due_date <= on]
    assert list(plan.installments[: len(due)]) == due
    assert days_past_due(paid.state, on) == 0


@PROPERTY_SETTINGS
@given(cases())
def test_payoff_refuses_a_quote_of_another_day_or_loan(case: Case) -> None:
    state, on = case.state, case.on
    quote = payoff_quote(state, on, case.multiplier)
    wrong = msgspec.structs.replace(quote, principal_fen=quote.principal_fen + 1)
    with pytest.raises(AllocationError) as refused:
        settle_payoff(state, on, wrong)
    assert refused.value.code == "QUOTE_MISMATCH"


# --- regressions ------------------------------------------------------------------------------

LOAN_START = date(2026, 1, 10)


def three_month_loan() -> Plan:
    # 12,000.00 yuan, 12 % a year, 3 months equal principal: r = 1 % a month, 1/3000 a day.
    plan = build_plan(1_200_000, Decimal(12), 3, RepaymentMethod.EQUAL_PRINCIPAL, LOAN_START)
    assert [(i.due_date, i.principal_fen, i.interest_fen) for i in plan.installments] == [
        (date(2026, 2, 10), 400_000, 12_000),  # 1 % of 1,200,000
        (date(2026, 3, 10), 400_000, 8_000),  # 1 % of 800,000
        (date(2026, 4, 10), 400_000, 4_000),  # 1 % of 400,000
    ]
    return plan


@pytest.mark.parametrize("on", [LOAN_START, date(2026, 2, 10), date(2026, 3, 10)])
def test_payoff_on_a_due_date_or_the_drawdown_day_keeps_the_plan_valid(on: date) -> None:
    # The payoff row once fell due on `on` itself, repeating today's installment's date
    # (or the drawdown's); it now takes the first replaced installment's seq and date.
    state = accrue_overdue(fresh_state(three_month_loan()), on)
    paid = settle_payoff(state, on, payoff_quote(state, on))
    check_plan(paid.state.plan)
    assert paid.total_fen == payoff_quote(state, on).total_fen


def test_payment_on_the_due_date_is_current_not_overdue() -> None:
    # Due today: no penalty yet; interest before principal; nothing past today touched.
    on = date(2026, 2, 10)
    state = accrue_overdue(fresh_state(three_month_loan()), on)
    assert days_past_due(state, on) == 0
    paid = allocate_due(state, on, 12_500)  # interest 12,000, then principal 500
    assert (paid.penalty_fen, paid.interest_fen, paid.principal_fen) == (0, 12_000, 500)
    assert paid.state.statuses[0] == InstallmentStatus(500, 12_000)
    assert paid.state.statuses[1:] == state.statuses[1:]
    assert due_total_fen(state, on) == 412_000


# --- worked examples --------------------------------------------------------------------------


def test_worked_example_overdue_with_penalty_and_compound_paid_partly() -> None:
    plan = three_month_loan()
    multiplier = Decimal("1.5")  # penalty rate 18 % a year: 18 / 100 / 360 = 1/2000 a day
    # Nothing paid. On 2026-03-20 installment 1 (due 02-10) is 38 days late (18 in Feb
    # after the 10th + 20 in March), installment 2 (due 03-10) 10 days.
    on = date(2026, 3, 20)
    state = accrue_overdue(fresh_state(plan), on, multiplier)
    # Each day is rounded once per loan and shared by what each installment has unpaid;
    # here every day's amount is exact: 200 a day of penalty per installment, compound
    # 12,000 / 2000 = 6 and 8,000 / 2000 = 4 a day.
    # Penalty 1: 200 × 38 = 7,600     compound 1: 6 × 38 = 228
    # Penalty 2: 200 × 10 = 2,000     compound 2: 4 × 10 = 40
    assert [(s.penalty_unpaid_fen, s.compound_unpaid_fen) for s in state.statuses] == [
        (7_600, 228),
        (2_000, 40),
        (0, 0),
    ]
    assert days_past_due(state, on) == 38
    # Due: charges 9,868 + interest 12,000 + 8,000 + principal 800,000 = 829,868.
    assert due_total_fen(state, on) == 829_868

    # Pay 1,000.00 yuan = 100,000 fen:
    #   1. charges 7,600 + 228 + 2,000 + 40 = 9,868          left 90,132
    #   2. overdue interest 12,000 (inst 1) + 8,000 (inst 2)  left 70,132
    #   3. overdue principal, oldest first: inst 1 takes 70,132 of 400,000
    paid = allocate_due(state, on, 100_000)
    assert paid == Allocation(
        penalty_fen=9_868,
        interest_fen=20_000,
        principal_fen=70_132,
        state=paid.state,
        penalty_paid_by_installment=(7_828, 2_040, 0),
    )
    assert paid.state.statuses[0] == InstallmentStatus(70_132, 12_000, 0, 0, on)
    assert paid.state.statuses[1] == InstallmentStatus(0, 8_000, 0, 0, on)
    assert paid.state.statuses[2] == InstallmentStatus()
    assert due_total_fen(paid.state, on) == 829_868 - 100_000

    # Ten days later penalty runs on the smaller remainder; interest is paid, so no compound.
    # Each day the loan's penalty is rounded once: (329,868 + 400,000) / 2000 = 364.934 -> 365,
    # shared 164.97 : 200.03 -> 164 + 200 and the fen left to the larger remainder: 165 + 200.
    later = date(2026, 3, 30)
    state = accrue_overdue(paid.state, later, multiplier)
    assert [(s.penalty_unpaid_fen, s.compound_unpaid_fen) for s in state.statuses[:2]] == [
        (1_650, 0),
        (2_000, 0),
    ]
    # Pay 50.00 yuan = 5,000 fen: charges 1,650 + 2,000 = 3,650, then 1,350 of inst 1's principal.
    again = allocate_due(state, later, 5_000)
    assert (again.penalty_fen, again.interest_fen, again.principal_fen) == (3_650, 0, 1_350)
    assert again.state.statuses[0].principal_paid_fen == 70_132 + 1_350
    assert again.state.statuses[1].principal_paid_fen == 0


def test_worked_example_payoff_after_a_missed_installment() -> None:
    plan = three_month_loan()
    # Installment 1 (due 02-10) missed; payoff on 2026-02-25, 15 days later.
    on = date(2026, 2, 25)
    state = accrue_overdue(fresh_state(plan), on)  # multiplier 1.5: 1/2000 a day
    quote = payoff_quote(state, on)
    # Not yet due: 400,000 + 400,000 = 800,000; its interest since 02-10 at 1/3000 a day:
    #   800,000 × 15 / 3000 = 4,000.
    # Due and unpaid: principal 400,000, interest 12,000.
    # Penalty: 400,000 × 15 / 2000 = 3,000; compound: 12,000 × 15 / 2000 = 90.
    assert (
        quote.principal_fen,
        quote.interest_fen,
        quote.due_principal_fen,
        quote.due_interest_fen,
        quote.penalty_fen,
        quote.compound_fen,
    ) == (800_000, 4_000, 400_000, 12_000, 3_000, 90)
    assert quote.total_fen == 1_219_090  # 800,000 + 4,000 + 400,000 + 12,000 + 3,000 + 90

    paid = settle_payoff(state, on, quote)
    assert (paid.penalty_fen, paid.interest_fen, paid.principal_fen) == (3_090, 16_000, 1_200_000)
    assert paid.penalty_paid_by_installment == (3_090, 0)
    # Installment 1 as it was; installments 2 and 3 become one row, seq 2 due 03-10, paid.
    assert paid.state.plan.installments == (
        Installment(1, date(2026, 2, 10), 400_000, 12_000, 800_000),
        Installment(2, date(2026, 3, 10), 800_000, 4_000, 0),
    )
    assert paid.state.statuses == (
        InstallmentStatus(400_000, 12_000, 0, 0, on),
        InstallmentStatus(800_000, 4_000),
    )
    check_plan(paid.state.plan)

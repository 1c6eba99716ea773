"""Paying before time: partial prepayment with its three plan rules, and payoff quotes.

A partial prepayment of principal `X` on day `d` (every installment due on or
before `d` already settled):

    interest settled now = round(X × annual/100/360 × days since the last due date, or start)
    principal not yet due B  ->  B − X, spread by `rule`:

    reduce_nearest  X comes off the nearest future installments' principal,
                    nearest first. Those installments, and any zero-principal
                    (grace) installment between them, charge interest on their
                    new, lower balance before; every later installment is
                    unchanged, because its balance before is exactly what it
                    was (the installments in between repaid X less in total).
    reduce_amount   same installments, B − X re-amortized by the loan's method.
    reduce_term     same level payment (or principal part), fewer installments;
                    not for interest_only or bullet, whose level amount repays
                    no principal.

The period in which `d` falls then charges a full month on B − X: the prepaid
principal's interest for the days it was out has just been settled.

A payoff quote on day `d` is the principal not yet due, its interest accrued
since the last due date (daily), the unpaid parts of installments due on or
before `d`, and their penalty and compound interest (`ledger.overdue`).

Future installments must be untouched: a payment before a due date is a
prepayment, booked through `prepay`, not a partial payment of an installment.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

import msgspec

from ledger.calendar import days_between
from ledger.overdue import (
    PENALTY_MULTIPLIER_DEFAULT,
    LoanState,
    OverdueCharges,
    overdue_charges,
)
from ledger.rates import RateRatio, daily_rate_ratio
from ledger.schedule import (
    Installment,
    Plan,
    RepaymentMethod,
    ScheduleError,
    amortize,
    amortize_keeping_payment,
    check_plan,
    period_interest_fen,
)


class PrepaymentError(ScheduleError):
    """A prepayment or payoff that the loan's state does not allow; `code` says why."""


class PrepaymentRule(StrEnum):
    """What a partial prepayment does to the rest of the plan."""

    REDUCE_NEAREST = "reduce_nearest"
    REDUCE_AMOUNT = "reduce_amount"
    REDUCE_TERM = "reduce_term"


_NO_TERM_REDUCTION = (RepaymentMethod.INTEREST_ONLY, RepaymentMethod.BULLET)


class Prepayment(msgspec.Struct, frozen=True):
    """The split of a prepayment and the loan's state after it."""

    interest_fen: int
    principal_fen: int
    state: LoanState

    @property
    def total_fen(self) -> int:
        """What the borrower pays now."""
        return self.interest_fen + self.principal_fen

    @property
    def plan(self) -> Plan:
        """The new plan."""
        return self.state.plan


class PayoffQuote(msgspec.Struct, frozen=True):
    """Everything that settles the loan on a day, in fen, by kind."""

    principal_fen: int  # not yet due
    interest_fen: int  # accrued on it since the last due date (or start), daily
    due_principal_fen: int  # unpaid principal of installments due on or before the day
    due_interest_fen: int
    penalty_fen: int
    compound_fen: int

    @property
    def total_fen(self) -> int:
        """The payoff amount."""
        return (
            self.principal_fen
            + self.interest_fen
            + self.due_principal_fen
            + self.due_interest_fen
            + self.penalty_fen
            + self.compound_fen
        )


def first_future_index(plan: Plan, on: date) -> int:
    """Index of the first installment due after `on`; len(installments) if none."""
    for index, installment in enumerate(plan.installments):
        if installment.due_date > on:
            return index
    return len(plan.installments)


def accrual_start(plan: Plan, on: date) -> date:
    """The day interest of the current period runs from: last due date on or before `on`."""
    index = first_future_index(plan, on)
    return plan.terms.start if index == 0 else plan.installments[index - 1].due_date


def accrual_ratio(plan: Plan, on: date) -> RateRatio:
    """The exact daily rate × days from `accrual_start` to `on`."""
    days = days_between(accrual_start(plan, on), on)
    return daily_rate_ratio(plan.terms.annual_rate_pct, days)


def prepayment_interest_fen(state: LoanState, on: date, principal_fen: int) -> int:
    """Interest settled with a prepayment of `principal_fen` on `on`."""
    _check_prepayable(state, on)
    return accrual_ratio(state.plan, on).interest_fen(principal_fen)


def principal_for_cash_fen(state: LoanState, on: date, cash_fen: int) -> int:
    """The most principal that `cash_fen` prepays on `on`, its interest included.

    The largest X with X + round(X·q) <= cash, q the accrual rate. X = floor(cash
    / (1 + q)) always fits, and X + 2 never does, so only X + 1 needs a look.
    The cash may exceed what X needs by a fen: the caller keeps or refunds it.
    """
    _check_prepayable(state, on)
    assert cash_fen >= 0, cash_fen
    ratio = accrual_ratio(state.plan, on)
    principal_fen = cash_fen * ratio.denominator // (ratio.denominator + ratio.numerator)
    if principal_fen + 1 + ratio.interest_fen(principal_fen + 1) <= cash_fen:
        principal_fen += 1
    assert principal_fen + ratio.interest_fen(principal_fen) <= cash_fen, principal_fen
    return principal_fen


def prepay(
    state: LoanState,
    on: date,
    principal_fen: int,
    rule: PrepaymentRule | str = PrepaymentRule.REDUCE_NEAREST,
) -> Prepayment:
    """Prepay `principal_fen` on `on`: the interest to settle now and the new state."""
    index = _check_prepayable(state, on)
    plan = state.plan
    rule = _check_rule(plan, rule)
    outstanding_fen = sum(installment.principal_fen for installment in plan.installments[index:])
    if isinstance(principal_fen, bool) or not isinstance(principal_fen, int) or principal_fen <= 0:
        raise PrepaymentError("PREPAYMENT_INVALID", "prepaid principal must be a positive amount")
    if principal_fen >= outstanding_fen:
        raise PrepaymentError(
            "PREPAYMENT_NOT_PARTIAL", "prepayment covers the whole balance: quote a payoff instead"
        )
    interest_fen = accrual_ratio(plan, on).interest_fen(principal_fen)
    balance_fen = outstanding_fen - principal_fen
    payment_fen = plan.payment_fen
    if rule is PrepaymentRule.REDUCE_NEAREST:
        future = _reduce_nearest(plan, index, principal_fen)
    elif rule is PrepaymentRule.REDUCE_AMOUNT:
        future, payment_fen = amortize(plan.terms, balance_fen, index + 1, len(plan.installments))
    else:
        future = amortize_keeping_payment(
            plan.terms, balance_fen, index + 1, len(plan.installments), payment_fen
        )
    installments = plan.installments[:index] + future
    new_plan = msgspec.structs.replace(
        plan,
        payment_fen=payment_fen,
        installments=installments,
        prepaid_fen=plan.prepaid_fen + principal_fen,
    )
    check_plan(new_plan)
    new_state = LoanState(new_plan, state.statuses[: len(installments)])
    return Prepayment(interest_fen, principal_fen, new_state)


def _check_rule(plan: Plan, rule: PrepaymentRule | str) -> PrepaymentRule:
    try:
        rule = PrepaymentRule(rule)
    except ValueError as exc:
        names = ", ".join(PrepaymentRule)
        raise PrepaymentError("RULE_UNKNOWN", f"rule must be one of: {names}") from exc
    if rule is PrepaymentRule.REDUCE_TERM and plan.terms.method in _NO_TERM_REDUCTION:
        raise PrepaymentError(
            "RULE_NOT_APPLICABLE", f"{plan.terms.method} has no term to reduce: use another rule"
        )
    return rule


def _check_prepayable(state: LoanState, on: date) -> int:
    # Returns the index of the first future installment.
    plan = state.plan
    if on < plan.terms.start:
        raise PrepaymentError("DATE_BEFORE_START", "the day is before the drawdown")
    index = first_future_index(plan, on)
    if index == len(plan.installments):
        raise PrepaymentError("NOTHING_TO_PREPAY", "no installment falls due after this day")
    for installment, status in zip(plan.installments[:index], state.statuses[:index], strict=True):
        settled = (
            status.principal_paid_fen == installment.principal_fen
            and status.interest_paid_fen == installment.interest_fen
            and status.penalty_unpaid_fen == 0
            and status.compound_unpaid_fen == 0
        )
        if not settled:
            raise PrepaymentError(
                "ARREARS_FIRST", f"installment {installment.seq} is due and not settled"
            )
    _check_future_untouched(state, index)
    return index


def _check_future_untouched(state: LoanState, index: int) -> None:
    for status in state.statuses[index:]:
        if not status.is_untouched:
            raise PrepaymentError(
                "FUTURE_INSTALLMENT_PAID", "an installment not yet due has payments booked"
            )


def _reduce_nearest(plan: Plan, index: int, principal_fen: int) -> tuple[Installment, ...]:
    # Take the prepaid principal off installments index, index+1, ... until it is used up;
    # each of those charges interest on its new balance before; the rest stay as they are.
    installments = plan.installments
    remaining_fen = principal_fen
    balance_fen = sum(installment.principal_fen for installment in installments[index:])
    balance_fen -= principal_fen
    rows: list[Installment] = []
    for position in range(index, len(installments)):
        installment = installments[position]
        if remaining_fen == 0:
            # The balance is back on the old path: everything from here is unchanged.
            assert balance_fen == installment.balance_after_fen + installment.principal_fen
            rows.extend(installments[position:])
            break
        taken_fen = min(remaining_fen, installment.principal_fen)
        remaining_fen -= taken_fen
        new_principal_fen = installment.principal_fen - taken_fen
        interest_fen = period_interest_fen(plan.terms, balance_fen)
        balance_fen -= new_principal_fen
        rows.append(
            Installment(
                installment.seq, installment.due_date, new_principal_fen, interest_fen, balance_fen
            )
        )
    assert remaining_fen == 0, remaining_fen
    return tuple(rows)


def payoff_quote(
    state: LoanState, on: date, multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT
) -> PayoffQuote:
    """What settles the whole loan on `on`; see the module docstring."""
    plan = state.plan
    if on < plan.terms.start:
        raise PrepaymentError("DATE_BEFORE_START", "the day is before the drawdown")
    index = first_future_index(plan, on)
    _check_future_untouched(state, index)
    charges: OverdueCharges = overdue_charges(state, on, multiplier)
    not_due_fen = sum(installment.principal_fen for installment in plan.installments[index:])
    return PayoffQuote(
        principal_fen=not_due_fen,
        interest_fen=accrual_ratio(plan, on).interest_fen(not_due_fen),
        due_principal_fen=charges.principal_fen,
        due_interest_fen=charges.interest_fen,
        penalty_fen=charges.penalty_fen,
        compound_fen=charges.compound_fen,
    )

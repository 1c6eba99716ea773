"""Allocating a payment of what is due over a loan's installments: the waterfall.

    1. penalty and compound interest   (oldest installment first)
    2. overdue interest                 (due before the day, oldest first)
    3. overdue principal
    4. current interest                 (due on the day)
    5. current principal

The state must have its overdue charges booked through the day first
(`ledger.overdue.accrue_overdue`), so that the penalty bucket is complete:
penalty accrues on what is unpaid *now*, so principal paid before its charges
are booked would never bear the days it was late. Both functions refuse such a
state (CHARGES_NOT_BOOKED). A payment never reaches an installment that is not
yet due: paying ahead is a prepayment (`ledger.prepayment`).
"""

from __future__ import annotations

from datetime import date

import msgspec

from ledger.overdue import InstallmentStatus, LoanState
from ledger.prepayment import PayoffQuote, first_future_index, payoff_quote
from ledger.schedule import Installment, check_plan


class AllocationError(ValueError):
    """A payment the due amounts cannot take; `code` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Allocation(msgspec.Struct, frozen=True):
    """How a payment was split, in fen, and the state after it."""

    penalty_fen: int  # penalty and compound interest
    interest_fen: int
    principal_fen: int
    state: LoanState
    penalty_paid_by_installment: tuple[int, ...]

    @property
    def total_fen(self) -> int:
        """The whole payment."""
        return self.penalty_fen + self.interest_fen + self.principal_fen


def due_total_fen(state: LoanState, on: date) -> int:
    """Everything due on or before `on` and unpaid, charges included (as booked)."""
    total = 0
    for item, status in zip(state.plan.installments, state.statuses, strict=True):
        if item.due_date > on:
            break
        total += status.penalty_unpaid_fen + status.compound_unpaid_fen
        total += item.interest_fen - status.interest_paid_fen
        total += item.principal_fen - status.principal_paid_fen
    return total


def _check_booked(state: LoanState, on: date) -> None:
    # Every overdue installment that still bears charges has them booked through `on`
    # exactly; nothing is booked past `on` (that would charge days not yet run).
    for item, status in zip(state.plan.installments, state.statuses, strict=True):
        through = status.accrued_through
        unpaid = item.total_fen - status.principal_paid_fen - status.interest_paid_fen
        if (item.due_date < on and unpaid and through != on) or (
            through is not None and through > on
        ):
            raise AllocationError(
                "CHARGES_NOT_BOOKED",
                f"installment {item.seq}: overdue charges must be booked through {on} first",
            )


def allocate_due(state: LoanState, on: date, amount_fen: int) -> Allocation:
    """Apply `amount_fen` to what is due on `on`, by the waterfall; see the module docstring."""
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen <= 0:
        raise AllocationError("AMOUNT_INVALID", "the payment must be a positive amount of fen")
    _check_booked(state, on)
    due_fen = due_total_fen(state, on)
    if due_fen == 0:
        raise AllocationError("NOTHING_DUE", "nothing is due on this loan")
    if amount_fen > due_fen:
        raise AllocationError("AMOUNT_EXCEEDS_DUE", f"at most {due_fen} fen is due")
    items = state.plan.installments
    statuses = list(state.statuses)
    penalty_paid = [0] * len(items)
    due = [index for index, item in enumerate(items) if item.due_date <= on]
    overdue = [index for index in due if items[index].due_date < on]
    current = [index for index in due if items[index].due_date == on]
    left = amount_fen
    split = [0, 0, 0]  # penalty, interest, principal
    for index in due:  # 1. penalty, then compound, oldest first
        status = statuses[index]
        take_penalty = min(left, status.penalty_unpaid_fen)
        take_compound = min(left - take_penalty, status.compound_unpaid_fen)
        statuses[index] = msgspec.structs.replace(
            status,
            penalty_unpaid_fen=status.penalty_unpaid_fen - take_penalty,
            compound_unpaid_fen=status.compound_unpaid_fen - take_compound,
        )
        penalty_paid[index] = take_penalty + take_compound
        left -= take_penalty + take_compound
        split[0] += take_penalty + take_compound
    for group in (overdue, current):  # 2-5: interest before principal, group by group
        for part in ("interest", "principal"):
            for index in group:
                taken = _take(statuses, index, items[index], part, left)
                left -= taken
                split[1 if part == "interest" else 2] += taken
    assert left == 0, left
    new_state = LoanState(state.plan, tuple(statuses))
    return Allocation(split[0], split[1], split[2], new_state, tuple(penalty_paid))


def _take(
    statuses: list[InstallmentStatus], index: int, item: Installment, part: str, left: int
) -> int:
    status = statuses[index]
    if part == "interest":
        taken = min(left, item.interest_fen - status.interest_paid_fen)
        paid = status.interest_paid_fen + taken
        statuses[index] = msgspec.structs.replace(status, interest_paid_fen=paid)
    else:
        taken = min(left, item.principal_fen - status.principal_paid_fen)
        paid = status.principal_paid_fen + taken
        statuses[index] = msgspec.structs.replace(status, principal_paid_fen=paid)
    return taken


def settle_payoff(state: LoanState, on: date, quote: PayoffQuote) -> Allocation:
    """The state after paying `quote` (from `payoff_quote(state, on)`) in full on `on`.

    Installments due on or before `on` are settled as they stand. The ones not
    yet due are replaced by the first of them (its seq and due date), holding
    the principal not yet due and its interest accrued to `on`, paid. Its due
    date is not `on`: on a due date or on the drawdown day that would repeat
    the previous date, and due dates must strictly increase. The plan ends at
    zero and keeps every invariant of `check_plan`.
    """
    _check_booked(state, on)
    # With nothing left to accrue the multiplier does not matter: the default will do.
    if quote != payoff_quote(state, on):
        raise AllocationError("QUOTE_MISMATCH", "the quote is not this loan's payoff on this day")
    plan = state.plan
    index = first_future_index(plan, on)
    kept = plan.installments[:index]
    settled = [
        InstallmentStatus(item.principal_fen, item.interest_fen, 0, 0, status.accrued_through)
        for item, status in zip(kept, state.statuses[:index], strict=True)
    ]
    penalty_paid = [s.penalty_unpaid_fen + s.compound_unpaid_fen for s in state.statuses[:index]]
    installments = list(kept)
    if quote.principal_fen:  # no interest accrues without principal
        first = plan.installments[index]
        installments.append(
            Installment(first.seq, first.due_date, quote.principal_fen, quote.interest_fen, 0)
        )
        settled.append(InstallmentStatus(quote.principal_fen, quote.interest_fen))
        penalty_paid.append(0)
    new_plan = msgspec.structs.replace(plan, installments=tuple(installments))
    check_plan(new_plan)
    assert sum(penalty_paid) == quote.penalty_fen + quote.compound_fen
    return Allocation(
        penalty_fen=quote.penalty_fen + quote.compound_fen,
        interest_fen=quote.interest_fen + quote.due_interest_fen,
        principal_fen=quote.principal_fen + quote.due_principal_fen,
        state=LoanState(new_plan, tuple(settled)),
        penalty_paid_by_installment=tuple(penalty_paid),
    )

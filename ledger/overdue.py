"""What is late and what lateness costs: days past due, penalty, compound, class.

A loan's position is its plan plus one `InstallmentStatus` per installment:

    LoanState(plan, statuses)
      installment 1  due 02-28  status: all paid
      installment 2  due 03-31  status: principal 300.00 of 8180.00 paid   <- overdue
      installment 3  due 04-30  status: nothing paid                       <- not yet due

On a day `on`, an installment with `due_date < on` and unpaid principal or
interest is overdue. Days past due count from the day after the oldest such
due date (due 03-31, on 04-01: DPD 1). Overdue principal bears penalty
interest (罚息) and overdue interest bears compound interest (复利), both at
the contract rate × a multiplier (1.3–1.5, 1.5 by default), daily; neither
bears interest itself.

Penalty accrues on the principal that is unpaid *now*. A service that takes a
partial payment of an overdue installment first calls `accrue_overdue` for
that day, which books the accrual so far into `penalty_unpaid_fen` /
`compound_unpaid_fen` and moves `accrued_through`; later accrual then runs on
the smaller remainder.
"""

from __future__ import annotations

from datetime import date
from decimal import Context, Decimal
from enum import StrEnum

import msgspec

from ledger.calendar import days_between
from ledger.rates import RateRatio, daily_rate_ratio, ratio_of
from ledger.schedule import Installment, Plan, ScheduleError

PENALTY_MULTIPLIER_DEFAULT = Decimal("1.5")
PENALTY_MULTIPLIER_MIN = Decimal("1.3")  # contract rate raised by 30 % ...
PENALTY_MULTIPLIER_MAX = Decimal("1.5")  # ... to 50 %

_RATE_CONTEXT = Context(prec=40)


class OverdueError(ScheduleError):
    """A loan state or penalty setting the overdue rules cannot work with."""


class LoanClass(StrEnum):
    """Five-category loan classification (贷款五级分类), mildest first."""

    NORMAL = "normal"
    SPECIAL_MENTION = "special_mention"
    SUBSTANDARD = "substandard"
    DOUBTFUL = "doubtful"
    LOSS = "loss"

    @property
    def label_zh(self) -> str:
        """The regulator's Chinese name of the class."""
        return _LABELS_ZH[self]


_LABELS_ZH = {
    LoanClass.NORMAL: "正常",
    LoanClass.SPECIAL_MENTION: "关注",
    LoanClass.SUBSTANDARD: "次级",
    LoanClass.DOUBTFUL: "可疑",
    LoanClass.LOSS: "损失",
}
# (highest DPD of the class, class), in order; beyond the last is LOSS.
_CLASS_FLOORS = (
    (0, LoanClass.NORMAL),
    (90, LoanClass.SPECIAL_MENTION),
    (270, LoanClass.SUBSTANDARD),
    (360, LoanClass.DOUBTFUL),
)


class InstallmentStatus(msgspec.Struct, frozen=True):
    """What has been paid of one installment, and overdue charges booked and unpaid.

    `accrued_through` is the day through which penalty and compound interest
    have been booked into the two `_unpaid_fen` fields; None means never, so
    accrual runs from the due date.
    """

    principal_paid_fen: int = 0
    interest_paid_fen: int = 0
    penalty_unpaid_fen: int = 0
    compound_unpaid_fen: int = 0
    accrued_through: date | None = None

    @property
    def is_untouched(self) -> bool:
        """Nothing paid and nothing booked."""
        return self == _UNTOUCHED


_UNTOUCHED = InstallmentStatus()


class LoanState(msgspec.Struct, frozen=True):
    """A plan and the status of each of its installments, in the same order."""

    plan: Plan
    statuses: tuple[InstallmentStatus, ...]

    def __post_init__(self) -> None:
        if len(self.statuses) != len(self.plan.installments):
            raise OverdueError("STATE_INVALID", "one status per installment is required")
        for installment, status in zip(self.plan.installments, self.statuses, strict=True):
            _check_status(installment, status)


def _check_status(installment: Installment, status: InstallmentStatus) -> None:
    paid_ok = 0 <= status.principal_paid_fen <= installment.principal_fen
    paid_ok = paid_ok and 0 <= status.interest_paid_fen <= installment.interest_fen
    charges_ok = status.penalty_unpaid_fen >= 0 and status.compound_unpaid_fen >= 0
    if not (paid_ok and charges_ok):
        raise OverdueError(
            "STATE_INVALID", f"installment {installment.seq}: paid parts out of range"
        )
    through = status.accrued_through
    if through is not None and through < installment.due_date:
        raise OverdueError("STATE_INVALID", f"installment {installment.seq}: accrual before due")


def fresh_state(plan: Plan) -> LoanState:
    """The state of a plan of which nothing has been paid yet."""
    return LoanState(plan, (_UNTOUCHED,) * len(plan.installments))


class OverdueCharges(msgspec.Struct, frozen=True):
    """What installments due on or before a day still ask for, in fen.

    `principal_fen` and `interest_fen` are unpaid parts of installments due on
    or before the day (including one due that very day, which is not yet
    overdue); penalty and compound interest are booked plus accrued to the day.
    """

    principal_fen: int
    interest_fen: int
    penalty_fen: int
    compound_fen: int

    @property
    def total_fen(self) -> int:
        """Everything due."""
        return self.principal_fen + self.interest_fen + self.penalty_fen + self.compound_fen


def penalty_rate_pct(
    annual_rate_pct: Decimal, multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT
) -> Decimal:
    """The penalty annual rate in percent: contract rate × multiplier (exact at 40 digits)."""
    _check_multiplier(multiplier)
    return _RATE_CONTEXT.multiply(annual_rate_pct, multiplier)


def _check_multiplier(multiplier: Decimal) -> None:
    if not isinstance(multiplier, Decimal) or not (
        PENALTY_MULTIPLIER_MIN <= multiplier <= PENALTY_MULTIPLIER_MAX
    ):
        raise OverdueError(
            "PENALTY_MULTIPLIER_INVALID",
            f"penalty multiplier must be between {PENALTY_MULTIPLIER_MIN} and "
            f"{PENALTY_MULTIPLIER_MAX}",
        )


def _penalty_ratio(annual_rate_pct: Decimal, multiplier: Decimal, days: int) -> RateRatio:
    # annual/100/360 × multiplier × days as one exact fraction: rounded once, per amount.
    _check_multiplier(multiplier)
    daily = daily_rate_ratio(annual_rate_pct, days)
    multiplier_numerator, multiplier_denominator = multiplier.as_integer_ratio()
    return ratio_of(
        daily.numerator * multiplier_numerator, daily.denominator * multiplier_denominator
    )


def penalty_interest_fen(
    overdue_principal_fen: int,
    annual_rate_pct: Decimal,
    days: int,
    multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT,
) -> int:
    """罚息: overdue principal × contract rate × multiplier / 360 × days, rounded once."""
    assert overdue_principal_fen >= 0 and days >= 0, (overdue_principal_fen, days)
    return _penalty_ratio(annual_rate_pct, multiplier, days).interest_fen(overdue_principal_fen)


def compound_interest_fen(
    overdue_interest_fen: int,
    annual_rate_pct: Decimal,
    days: int,
    multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT,
) -> int:
    """复利: overdue interest at the same penalty rate, daily; it does not compound further."""
    assert overdue_interest_fen >= 0 and days >= 0, (overdue_interest_fen, days)
    return _penalty_ratio(annual_rate_pct, multiplier, days).interest_fen(overdue_interest_fen)


def oldest_unpaid_due_date(state: LoanState, on: date) -> date | None:
    """The earliest due date before `on` whose principal or interest is still unpaid."""
    for installment, status in zip(state.plan.installments, state.statuses, strict=True):
        if installment.due_date >= on:
            return None
        if _unpaid_principal_fen(installment, status) or _unpaid_interest_fen(installment, status):
            return installment.due_date
    return None


def days_past_due(state: LoanState, on: date) -> int:
    """DPD on `on`: days since the oldest unpaid due date (1 on the day after it), else 0."""
    oldest = oldest_unpaid_due_date(state, on)
    return 0 if oldest is None else days_between(oldest, on)


def classification_floor(days_past_due: int) -> LoanClass:
    """The mildest class the regulator allows for a retail loan with this DPD.

    0 normal; 1–90 special mention; 91–270 substandard; 271–360 doubtful;
    over 360 loss. A bank may classify worse, never better.
    """
    assert days_past_due >= 0, days_past_due
    for highest_days, loan_class in _CLASS_FLOORS:
        if days_past_due <= highest_days:
            return loan_class
    return LoanClass.LOSS


def overdue_charges(
    state: LoanState, on: date, multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT
) -> OverdueCharges:
    """Unpaid parts of installments due on or before `on`, with penalty and compound to `on`."""
    _check_multiplier(multiplier)
    annual_rate_pct = state.plan.terms.annual_rate_pct
    totals = [0, 0, 0, 0]
    for installment, status in zip(state.plan.installments, state.statuses, strict=True):
        if installment.due_date > on:
            break
        accrued = _accrue(installment, status, on, annual_rate_pct, multiplier)
        totals[0] += _unpaid_principal_fen(installment, status)
        totals[1] += _unpaid_interest_fen(installment, status)
        totals[2] += accrued.penalty_unpaid_fen
        totals[3] += accrued.compound_unpaid_fen
    return OverdueCharges(*totals)


def accrue_overdue(
    state: LoanState, on: date, multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT
) -> LoanState:
    """Book penalty and compound interest accrued through `on` into the statuses.

    Call it on the day of any payment that changes an overdue installment's
    unpaid principal or interest, before applying the payment.
    """
    _check_multiplier(multiplier)
    annual_rate_pct = state.plan.terms.annual_rate_pct
    statuses = tuple(
        _accrue(installment, status, on, annual_rate_pct, multiplier)
        if installment.due_date < on
        else status
        for installment, status in zip(state.plan.installments, state.statuses, strict=True)
    )
    return LoanState(state.plan, statuses)


def _accrue(
    installment: Installment,
    status: InstallmentStatus,
    on: date,
    annual_rate_pct: Decimal,
    multiplier: Decimal,
) -> InstallmentStatus:
    # Penalty/compound from the later of the due date and the last booking, to `on`.
    since = installment.due_date if status.accrued_through is None else status.accrued_through
    if on < since:
        raise OverdueError("DATE_BEFORE_ACCRUAL", "charges are already booked past this day")
    if on == since:
        return status
    days = days_between(since, on)
    penalty_fen = penalty_interest_fen(
        _unpaid_principal_fen(installment, status), annual_rate_pct, days, multiplier
    )
    compound_fen = compound_interest_fen(
        _unpaid_interest_fen(installment, status), annual_rate_pct, days, multiplier
    )
    return msgspec.structs.replace(
        status,
        penalty_unpaid_fen=status.penalty_unpaid_fen + penalty_fen,
        compound_unpaid_fen=status.compound_unpaid_fen + compound_fen,
        accrued_through=on,
    )


def _unpaid_principal_fen(installment: Installment, status: InstallmentStatus) -> int:
    return installment.principal_fen - status.principal_paid_fen


def _unpaid_interest_fen(installment: Installment, status: InstallmentStatus) -> int:
    return installment.interest_fen - status.interest_paid_fen


def unpaid_fen(installment: Installment, status: InstallmentStatus) -> int:
    """Principal and interest of the installment still unpaid (charges not included)."""
    return _unpaid_principal_fen(installment, status) + _unpaid_interest_fen(installment, status)

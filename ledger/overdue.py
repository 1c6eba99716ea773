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

Day by day, per loan (MONEY.md): the penalty of day `x` is the loan's principal
unpaid at the start of `x` of the installments due before `x` × rate × multiplier /
360, rounded half-up to the fen once for the loan; likewise the compound interest on
their unpaid interest. The loan's fen are then shared among those installments in
proportion to what each has unpaid (largest remainder, the oldest first on a tie), so
that the waterfall can pay charges installment by installment.

Penalty accrues on the principal that is unpaid *now*. The day-end books each day
(`accrue_overdue(state, day)`), and a service that takes a payment of an overdue
installment first calls it for the payment's day: the charges so far go into
`penalty_unpaid_fen` / `compound_unpaid_fen` and `accrued_through` moves; later
days then run on the smaller remainder.
"""

from __future__ import annotations

from datetime import date, timedelta
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
_ONE_DAY = timedelta(days=1)


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
    accrued = accrue_overdue(state, on, multiplier)
    totals = [0, 0, 0, 0]
    for installment, status in zip(accrued.plan.installments, accrued.statuses, strict=True):
        if installment.due_date > on:
            break
        totals[0] += _unpaid_principal_fen(installment, status)
        totals[1] += _unpaid_interest_fen(installment, status)
        totals[2] += status.penalty_unpaid_fen
        totals[3] += status.compound_unpaid_fen
    return OverdueCharges(*totals)


def accrue_overdue(
    state: LoanState, on: date, multiplier: Decimal = PENALTY_MULTIPLIER_DEFAULT
) -> LoanState:
    """Book penalty and compound interest through `on` into the statuses, day by day.

    Every installment due before `on` is then booked through `on`. Call it on the day
    of any payment that changes an overdue installment's unpaid principal or interest,
    before applying the payment; the day-end calls it for each day.
    """
    _check_multiplier(multiplier)
    items = state.plan.installments
    statuses = list(state.statuses)
    overdue = [index for index, item in enumerate(items) if item.due_date < on]
    if not overdue:
        return state
    since = [_booked_through(items[index], statuses[index]) for index in overdue]
    if max(since) > on:
        raise OverdueError("DATE_BEFORE_ACCRUAL", "charges are already booked past this day")
    ratio = _penalty_ratio(state.plan.terms.annual_rate_pct, multiplier, 1)
    penalty = [0] * len(items)
    compound = [0] * len(items)
    day = min(since) + _ONE_DAY
    while day <= on:
        charged = [
            index
            for index, booked in zip(overdue, since, strict=True)
            if items[index].due_date < day and booked < day
        ]
        principal = [_unpaid_principal_fen(items[i], statuses[i]) for i in charged]
        interest = [_unpaid_interest_fen(items[i], statuses[i]) for i in charged]
        for index, share in zip(charged, _apportion(ratio, principal), strict=True):
            penalty[index] += share
        for index, share in zip(charged, _apportion(ratio, interest), strict=True):
            compound[index] += share
        day += _ONE_DAY
    for index in overdue:
        statuses[index] = msgspec.structs.replace(
            statuses[index],
            penalty_unpaid_fen=statuses[index].penalty_unpaid_fen + penalty[index],
            compound_unpaid_fen=statuses[index].compound_unpaid_fen + compound[index],
            accrued_through=on,
        )
    return LoanState(state.plan, tuple(statuses))


def _booked_through(installment: Installment, status: InstallmentStatus) -> date:
    # Charges run from the later of the due date and the last booking.
    return installment.due_date if status.accrued_through is None else status.accrued_through


def _apportion(ratio: RateRatio, bases: list[int]) -> list[int]:
    """One day's charge on the sum of `bases`, rounded once, shared by the largest
    remainder in proportion to each base (the earliest first on equal remainders)."""
    total_base = sum(bases)
    if total_base == 0:
        return [0] * len(bases)
    total = ratio.interest_fen(total_base)
    exact = [total * base for base in bases]  # each share is exact[i] / total_base
    shares = [value // total_base for value in exact]
    left = total - sum(shares)
    order = sorted(range(len(bases)), key=lambda i: (-(exact[i] % total_base), i))
    for index in order[:left]:
        shares[index] += 1
    return shares


def _unpaid_principal_fen(installment: Installment, status: InstallmentStatus) -> int:
    return installment.principal_fen - status.principal_paid_fen


def _unpaid_interest_fen(installment: Installment, status: InstallmentStatus) -> int:
    return installment.interest_fen - status.interest_paid_fen


def unpaid_fen(installment: Installment, status: InstallmentStatus) -> int:
    """Principal and interest of the installment still unpaid (charges not included)."""
    return _unpaid_principal_fen(installment, status) + _unpaid_interest_fen(installment, status)

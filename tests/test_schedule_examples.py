"""Worked examples of the schedule calculator, each figure checked by hand or by a
third party (numpy-financial), with the arithmetic in the comments.

Notation: r = annual/100/12 is the monthly rate, q = annual/100/360 the daily rate;
"round" is half-up to the fen, once per amount.
"""

from __future__ import annotations

import random
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import msgspec
import numpy_financial as npf
import pytest

from ledger.calendar import add_months, days_between, due_dates
from ledger.money import round_fen_ratio
from ledger.overdue import (
    InstallmentStatus,
    LoanClass,
    LoanState,
    OverdueError,
    accrue_overdue,
    classification_floor,
    compound_interest_fen,
    days_past_due,
    fresh_state,
    overdue_charges,
    penalty_interest_fen,
    penalty_rate_pct,
)
from ledger.prepayment import (
    PrepaymentError,
    PrepaymentRule,
    payoff_quote,
    prepay,
    principal_for_cash_fen,
)
from ledger.rates import (
    RateBand,
    RateError,
    clamp_to_band,
    customer_rate_pct,
    daily_rate,
    monthly_rate,
    product_rate_pct,
)
from ledger.schedule import Plan, RepaymentMethod, ScheduleError, build_plan

RATE = Decimal("4.9")
START = date(2026, 1, 31)


def cli_example_plan() -> Plan:
    """100,000.00 yuan at 4.9 % over 12 months, equal installment, drawn 2026-01-31."""
    return build_plan(10_000_000, RATE, 12, RepaymentMethod.EQUAL_INSTALLMENT, START)


def settled_through(plan: Plan, paid_count: int) -> LoanState:
    """Installments 1..paid_count paid in full, the rest untouched."""
    statuses = [
        InstallmentStatus(installment.principal_fen, installment.interest_fen)
        for installment in plan.installments[:paid_count]
    ]
    statuses += [InstallmentStatus()] * (len(plan.installments) - paid_count)
    return LoanState(plan, tuple(statuses))


# --- published figures ------------------------------------------------------------------------


def test_one_million_over_thirty_years_is_5307_27_a_month() -> None:
    # The figure every Chinese mortgage calculator shows for 100万, 4.9 %, 30 years, 等额本息.
    plan = build_plan(100_000_000, RATE, 360, RepaymentMethod.EQUAL_INSTALLMENT, START)
    assert plan.payment_fen == 530_727
    assert all(installment.total_fen == 530_727 for installment in plan.installments[:-1])
    assert plan.installments[0].interest_fen == 408_333  # 1,000,000 × 0.049/12 = 4083.333
    assert plan.installments[-1].balance_after_fen == 0


def test_cli_example_figures() -> None:
    plan = cli_example_plan()
    first = plan.installments[0]
    # r = 0.049/12; A = 100000 × r(1+r)^12/((1+r)^12 − 1) = 8556.1662 -> 8556.17
    assert plan.payment_fen == 855_617
    # interest 100000 × 0.049/12 = 408.3333 -> 408.33; principal 8556.17 − 408.33 = 8147.84
    assert (first.seq, first.due_date) == (1, date(2026, 2, 28))
    assert (first.principal_fen, first.interest_fen, first.total_fen) == (814_784, 40_833, 855_617)
    assert first.balance_after_fen == 9_185_216
    assert plan.total_interest_fen == 267_399
    # The last installment takes the remaining 8521.32, with 8521.32 × r = 34.80: 8556.12.
    last = plan.installments[-1]
    assert (last.principal_fen, last.interest_fen, last.total_fen) == (852_132, 3_480, 855_612)


def test_payment_matches_numpy_financial_pmt() -> None:
    # numpy-financial works in floats; that is fine for an independent check, never for the
    # engine. Its pmt is rounded half-up here as MONEY.md says; a float within 1e-6 fen of a
    # tie cannot decide the rounding and is skipped (it does not happen with these seeds).
    generator = random.Random(20260131)
    checked = 0
    for _ in range(2000):
        principal_fen = generator.randint(1_00, 10_000_000_00)
        rate_pct = Decimal(generator.randint(0, 2400)).scaleb(-2)
        months = generator.randint(1, 480)
        exact_fen = -npf.pmt(float(rate_pct) / 1200, months, principal_fen)
        fraction = Decimal(repr(float(exact_fen))) % 1
        if abs(fraction - Decimal("0.5")) < Decimal("1e-6"):
            continue
        expected_fen = int(Decimal(repr(float(exact_fen))).quantize(Decimal(1), ROUND_HALF_UP))
        plan = build_plan(principal_fen, rate_pct, months, "equal_installment", START)
        assert plan.payment_fen == expected_fen, (principal_fen, rate_pct, months)
        checked += 1
    assert checked >= 1990


# --- the other methods, by hand ---------------------------------------------------------------


def test_equal_principal_by_hand() -> None:
    plan = build_plan(10_000_000, RATE, 12, RepaymentMethod.EQUAL_PRINCIPAL, START)
    # 100000 / 12 = 8333.3333 -> 8333.33 a month; the last takes 100000 − 11 × 8333.33 = 8333.37.
    assert plan.payment_fen == 833_333
    assert [i.principal_fen for i in plan.installments] == [833_333] * 11 + [833_337]
    # interest 1: 100000 × r = 408.33; interest 2: 91666.67 × r = 374.3056 -> 374.31
    assert [i.interest_fen for i in plan.installments[:2]] == [40_833, 37_431]


def test_interest_only_by_hand() -> None:
    plan = build_plan(10_000_000, RATE, 12, RepaymentMethod.INTEREST_ONLY, START)
    # 100000 × 0.049/12 = 408.33 every month, all principal in the 12th.
    assert [i.interest_fen for i in plan.installments] == [40_833] * 12
    assert [i.principal_fen for i in plan.installments] == [0] * 11 + [10_000_000]
    assert plan.total_interest_fen == 489_996


def test_bullet_by_hand() -> None:
    plan = build_plan(10_000_000, RATE, 12, RepaymentMethod.BULLET, START)
    # 2026-01-31 -> 2027-01-31 is 365 days: 100000 × 0.049/360 × 365 = 4968.0556 -> 4968.06
    (only,) = plan.installments
    assert (only.due_date, only.principal_fen, only.interest_fen) == (
        date(2027, 1, 31),
        10_000_000,
        496_806,
    )


def test_grace_then_equal_installment_by_hand() -> None:
    plan = build_plan(
        10_000_000, RATE, 12, RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT, START, grace_months=3
    )
    # 3 months of 408.33, then A over 9 months: 100000 × r(1+r)^9/((1+r)^9 − 1) = 11339.20
    assert [i.total_fen for i in plan.installments[:3]] == [40_833] * 3
    assert plan.payment_fen == 1_133_920
    assert plan.installments[3].principal_fen == 1_133_920 - 40_833
    assert plan.installments[3].due_date == date(2026, 5, 31)


@pytest.mark.parametrize("method", list(RepaymentMethod))
def test_zero_rate_degenerates_cleanly(method: RepaymentMethod) -> None:
    grace_months = 2 if method is RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT else 0
    plan = build_plan(1_000_000, Decimal(0), 7, method, START, grace_months=grace_months)
    assert plan.total_interest_fen == 0
    assert sum(i.principal_fen for i in plan.installments) == 1_000_000
    if method is RepaymentMethod.EQUAL_INSTALLMENT:
        # 10000 / 7 = 1428.5714 -> 1428.57; the last takes 10000 − 6 × 1428.57 = 1428.58
        assert [i.principal_fen for i in plan.installments] == [142_857] * 6 + [142_858]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((0, RATE, 12, "equal_installment", START), "PRINCIPAL_INVALID"),
        ((-5, RATE, 12, "equal_installment", START), "PRINCIPAL_INVALID"),
        ((100, Decimal("-1"), 12, "equal_installment", START), "RATE_NEGATIVE"),
        ((100, Decimal("37"), 12, "equal_installment", START), "RATE_TOO_HIGH"),
        ((100, Decimal("4.1234567"), 12, "equal_installment", START), "RATE_TOO_PRECISE"),
        ((100, Decimal("NaN"), 12, "equal_installment", START), "RATE_NOT_DECIMAL"),
        ((100, RATE, 0, "equal_installment", START), "MONTHS_INVALID"),
        ((100, RATE, 601, "equal_installment", START), "MONTHS_INVALID"),
        ((100, RATE, 12, "balloon", START), "METHOD_UNKNOWN"),
        ((100, RATE, 12, "equal_installment", date(9999, 1, 1)), "START_INVALID"),
    ],
)
def test_bad_inputs_are_refused_with_a_code(args: tuple[object, ...], code: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        build_plan(*args)  # type: ignore[arg-type]
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("method", "grace_months", "code"),
    [
        ("grace_then_equal_installment", 12, "GRACE_INVALID"),
        ("grace_then_equal_installment", 0, "GRACE_INVALID"),
        ("equal_installment", 3, "GRACE_NOT_APPLICABLE"),
    ],
)
def test_grace_months_must_fit(method: str, grace_months: int, code: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        build_plan(10_000, RATE, 12, method, START, grace_months=grace_months)
    assert caught.value.code == code


# --- calendar and rates -----------------------------------------------------------------------


def test_month_rule_at_month_ends() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    # From the start, not chained: the 31st comes back after February.
    assert due_dates(date(2026, 1, 31), 3) == (
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
    )
    assert days_between(date(2026, 1, 31), date(2026, 2, 28)) == 28


def test_rate_helpers() -> None:
    # LPR 3.45 % + 145 bp = 4.90 %; LPR − 20 bp = 3.25 %
    assert product_rate_pct(Decimal("3.45"), 145) == Decimal("4.90")
    assert product_rate_pct(Decimal("3.45"), -20) == Decimal("3.25")
    with pytest.raises(RateError) as caught:
        product_rate_pct(Decimal("0.10"), -20)
    assert caught.value.code == "RATE_NEGATIVE"
    band = RateBand(Decimal("4.00"), Decimal("6.00"))
    assert customer_rate_pct(Decimal("4.9"), band) == Decimal("4.9")
    for rate_pct, code in (
        (Decimal("3.99"), "RATE_BELOW_FLOOR"),
        (Decimal("6.01"), "RATE_ABOVE_CEILING"),
    ):
        with pytest.raises(RateError) as caught:
            customer_rate_pct(rate_pct, band)
        assert caught.value.code == code
    assert clamp_to_band(Decimal("3.5"), band) == Decimal("4.00")
    assert clamp_to_band(Decimal("7"), band) == Decimal("6.00")
    with pytest.raises(RateError) as caught:
        customer_rate_pct(Decimal(5), RateBand(Decimal(6), Decimal(4)))
    assert caught.value.code == "BAND_INVERTED"
    # 4.9/1200 and 4.9/36000 to 40 significant digits
    assert monthly_rate(RATE) == Decimal("0.004083333333333333333333333333333333333333")
    assert daily_rate(RATE) == Decimal("0.0001361111111111111111111111111111111111111")


def test_round_fen_ratio_ties_go_up() -> None:
    assert round_fen_ratio(5, 2) == 3  # 2.5 -> 3
    assert round_fen_ratio(-5, 2) == -3  # ties away from zero, like ROUND_HALF_UP
    assert round_fen_ratio(12, 5) == 2  # 2.4 -> 2


# --- prepayment, by hand ----------------------------------------------------------------------
#
# The CLI example loan; installments 1 (2026-02-28) and 2 (2026-03-31) paid; on 2026-04-10 the
# borrower prepays 20,000.00 of principal. Balance before installment 3: 83,671.05.
#   interest settled: 20000 × 0.049/360 × 10 days (03-31 -> 04-10) = 27.2222 -> 27.22
#   balance left: 83671.05 − 20000 = 63671.05; a month on it: 63671.05 × 0.049/12 = 259.9901
#   -> 259.99

PREPAY_DAY = date(2026, 4, 10)


def test_prepayment_reduce_nearest_by_hand() -> None:
    result = prepay(settled_through(cli_example_plan(), 2), PREPAY_DAY, 2_000_000)
    assert (result.interest_fen, result.principal_fen, result.total_fen) == (
        2_722,
        2_000_000,
        2_002_722,
    )
    rows = result.plan.installments
    # 20000 = 8214.51 (all of #3) + 8248.06 (all of #4) + 3537.43 (of #5's 8281.74 -> 4744.31)
    assert [(r.principal_fen, r.interest_fen) for r in rows[2:5]] == [
        (0, 25_999),
        (0, 25_999),
        (474_431, 25_999),
    ]
    # After #5 the balance is back on the old path (58926.74): #6.. are unchanged.
    assert rows[4].balance_after_fen == 5_892_674
    assert rows[5:] == cli_example_plan().installments[5:]
    assert result.plan.prepaid_fen == 2_000_000


def test_prepayment_reduce_amount_by_hand() -> None:
    state = settled_through(cli_example_plan(), 2)
    result = prepay(state, PREPAY_DAY, 2_000_000, PrepaymentRule.REDUCE_AMOUNT)
    # 63671.05 over the 10 remaining months: (1+r)^10 = 1.0415919;
    # A = 63671.05 × 0.0040833 × 1.0415919 / 0.0415919 = 6510.9736 -> 6510.97
    assert result.plan.payment_fen == 651_097
    third = result.plan.installments[2]
    assert (third.interest_fen, third.principal_fen) == (25_999, 651_097 - 25_999)
    assert len(result.plan.installments) == 12


def test_prepayment_reduce_term_by_hand() -> None:
    state = settled_through(cli_example_plan(), 2)
    result = prepay(state, PREPAY_DAY, 2_000_000, PrepaymentRule.REDUCE_TERM)
    rows = result.plan.installments
    # Keep 8556.17: #3 repays 8556.17 − 259.99 = 8296.18, balance 55374.87; ... the plan now
    # ends at #10, which takes the last 4881.53 with 4881.53 × r = 19.93 of interest.
    assert (rows[2].principal_fen, rows[2].balance_after_fen) == (829_618, 5_537_487)
    assert len(rows) == 10
    assert (rows[-1].principal_fen, rows[-1].interest_fen) == (488_153, 1_993)


def test_cash_to_principal_split() -> None:
    state = settled_through(cli_example_plan(), 2)
    # 20027.22 of cash is exactly 20000.00 + its 27.22 of interest.
    assert principal_for_cash_fen(state, PREPAY_DAY, 2_002_722) == 2_000_000
    # One fen less cannot carry 20000.00: 19999.99 + 27.22 = 20027.21.
    assert principal_for_cash_fen(state, PREPAY_DAY, 2_002_721) == 1_999_999


def test_bullet_prepayment_by_hand() -> None:
    plan = build_plan(10_000_000, RATE, 12, RepaymentMethod.BULLET, START)
    result = prepay(fresh_state(plan), date(2026, 7, 31), 4_000_000)
    # 2026-01-31 -> 2026-07-31 is 181 days: 40000 × 0.049/360 × 181 = 985.4444 -> 985.44
    assert result.interest_fen == 98_544
    # Maturity keeps the rest: 60000 × 0.049/360 × 365 = 2980.8333 -> 2980.83
    (only,) = result.plan.installments
    assert (only.principal_fen, only.interest_fen) == (6_000_000, 298_083)


def test_prepayment_refusals() -> None:
    plan = cli_example_plan()
    with pytest.raises(PrepaymentError) as caught:  # installment 2 due 03-31 is unpaid
        prepay(settled_through(plan, 1), PREPAY_DAY, 100)
    assert caught.value.code == "ARREARS_FIRST"
    with pytest.raises(PrepaymentError) as caught:
        prepay(settled_through(plan, 2), PREPAY_DAY, 8_367_105)  # the whole balance
    assert caught.value.code == "PREPAYMENT_NOT_PARTIAL"
    interest_only = build_plan(10_000_000, RATE, 12, RepaymentMethod.INTEREST_ONLY, START)
    with pytest.raises(PrepaymentError) as caught:
        prepay(fresh_state(interest_only), date(2026, 2, 10), 100, PrepaymentRule.REDUCE_TERM)
    assert caught.value.code == "RULE_NOT_APPLICABLE"


# --- payoff and overdue, by hand --------------------------------------------------------------


def test_payoff_quote_current_loan_by_hand() -> None:
    quote = payoff_quote(settled_through(cli_example_plan(), 2), PREPAY_DAY)
    # 83671.05 not yet due; 83671.05 × 0.049/360 × 10 = 113.8856 -> 113.89
    assert (quote.principal_fen, quote.interest_fen) == (8_367_105, 11_389)
    assert quote.total_fen == 8_367_105 + 11_389


def test_payoff_quote_overdue_loan_by_hand() -> None:
    state = settled_through(cli_example_plan(), 1)  # #2 (8181.11 + 375.06) due 03-31, unpaid
    quote = payoff_quote(state, PREPAY_DAY)
    # penalty rate 4.9 % × 1.5 = 7.35 %; 10 days (03-31 -> 04-10), each day rounded once:
    #   penalty:  8181.11 × 0.0735/360 = 1.67031 -> 1.67 a day, 16.70
    #   compound:  375.06 × 0.0735/360 = 0.07658 -> 0.08 a day,  0.80
    assert (quote.due_principal_fen, quote.due_interest_fen) == (818_111, 37_506)
    assert (quote.penalty_fen, quote.compound_fen) == (1_670, 80)
    assert (quote.principal_fen, quote.interest_fen) == (8_367_105, 11_389)
    assert quote.total_fen == 8_367_105 + 11_389 + 818_111 + 37_506 + 1_670 + 80
    assert days_past_due(state, PREPAY_DAY) == 10
    assert classification_floor(10) is LoanClass.SPECIAL_MENTION


def test_partial_payment_of_overdue_principal_by_hand() -> None:
    state = settled_through(cli_example_plan(), 1)
    # On 04-05 (5 days late) book the accrual, then 4000.00 of #2's principal is paid:
    #   penalty 1.67 a day (above) × 5 = 8.35;  compound 0.08 a day × 5 = 0.40
    booked = accrue_overdue(state, date(2026, 4, 5))
    assert (booked.statuses[1].penalty_unpaid_fen, booked.statuses[1].compound_unpaid_fen) == (
        835,
        40,
    )
    paid = msgspec.structs.replace(booked.statuses[1], principal_paid_fen=400_000)
    state = LoanState(booked.plan, (booked.statuses[0], paid, *booked.statuses[2:]))
    # On 04-10 five more days on 4181.11: 4181.11 × 0.0735/360 = 0.85364 -> 0.85 a day,
    # 4.25; penalty 8.35 + 4.25 = 12.60; compound 0.40 + 0.40 = 0.80.
    charges = overdue_charges(state, PREPAY_DAY)
    assert (charges.principal_fen, charges.interest_fen) == (418_111, 37_506)
    assert (charges.penalty_fen, charges.compound_fen) == (1_260, 80)
    with pytest.raises(OverdueError):
        overdue_charges(state, date(2026, 4, 4))  # before what is already booked


def test_penalty_helpers_by_hand() -> None:
    assert penalty_rate_pct(RATE) == Decimal("7.35")
    assert penalty_rate_pct(RATE, Decimal("1.3")) == Decimal("6.37")
    # 10000.00 × 0.0735/360 × 30 = 61.25 exactly; at 1.3×: 10000 × 0.0637/360 × 30 = 53.0833
    assert penalty_interest_fen(1_000_000, RATE, 30) == 6_125
    assert penalty_interest_fen(1_000_000, RATE, 30, Decimal("1.3")) == 5_308
    assert compound_interest_fen(10_000, RATE, 30) == 61  # 100.00 × 0.0735/360 × 30 = 0.6125
    with pytest.raises(OverdueError):
        penalty_rate_pct(RATE, Decimal("2"))


def test_days_past_due_counts_from_the_day_after() -> None:
    state = settled_through(cli_example_plan(), 1)  # #2 due 2026-03-31
    assert days_past_due(state, date(2026, 3, 31)) == 0
    assert days_past_due(state, date(2026, 4, 1)) == 1
    assert days_past_due(settled_through(cli_example_plan(), 2), date(2026, 4, 10)) == 0


@pytest.mark.parametrize(
    ("days", "loan_class", "label"),
    [
        (0, LoanClass.NORMAL, "正常"),
        (1, LoanClass.SPECIAL_MENTION, "关注"),
        (90, LoanClass.SPECIAL_MENTION, "关注"),
        (91, LoanClass.SUBSTANDARD, "次级"),
        (270, LoanClass.SUBSTANDARD, "次级"),
        (271, LoanClass.DOUBTFUL, "可疑"),
        (360, LoanClass.DOUBTFUL, "可疑"),
        (361, LoanClass.LOSS, "损失"),
    ],
)
def test_classification_floor(days: int, loan_class: LoanClass, label: str) -> None:
    assert classification_floor(days) is loan_class
    assert loan_class.label_zh == label


def test_state_survives_a_json_round_trip() -> None:
    # The repayment service stores plans and states as JSON; decoding re-checks the state.
    plan = build_plan(
        10_000_000, RATE, 12, RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT, START, grace_months=2
    )
    state = settled_through(plan, 3)
    assert msgspec.json.decode(msgspec.json.encode(state), type=LoanState) == state
    broken = msgspec.json.encode(LoanState(plan, state.statuses)).replace(
        b'"principal_paid_fen":0', b'"principal_paid_fen":-1', 1
    )
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(broken, type=LoanState)

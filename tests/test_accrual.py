"""Accrual of regular interest (ledger.accrual) and its SQL twin in the shard
(`interest_accrued_fen`, ledger migration 0012), and the day-by-day penalty of
ledger.overdue: MONEY.md's rules, checked as properties over random plans and days."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.accrual import interest_accrued_fen
from ledger.money import round_fen_ratio
from ledger.overdue import accrue_overdue, fresh_state
from ledger.rates import daily_rate_ratio
from ledger.schedule import Installment, Plan, RepaymentMethod, build_plan
from tests.test_allocation import cases, plans

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _days(plan: Plan) -> list[date]:
    end = plan.installments[-1].due_date + timedelta(days=3)
    day, out = plan.terms.start - timedelta(days=2), []
    while day <= end:
        out.append(day)
        day += timedelta(days=1)
    return out


@PROPERTIES
@given(plans())
def test_each_period_accrues_exactly_its_installment_interest(plan: Plan) -> None:
    """Daily postings (today's figure minus yesterday's) never go back, and by each due
    date they add up to exactly the interest of the installments due by then."""
    posted = 0
    for day in _days(plan):
        figure = interest_accrued_fen(plan, day)
        assert figure >= posted
        posted = figure
        due = [i for i in plan.installments if i.due_date <= day]
        if day in {i.due_date for i in plan.installments}:
            assert figure == sum(i.interest_fen for i in due)
    assert posted == sum(i.interest_fen for i in plan.installments)
    assert interest_accrued_fen(plan, plan.terms.start) == 0


def test_accrual_by_hand() -> None:
    # 12,000.00 at 12 % a year, 3 months from 2026-01-31: due 02-28, 03-31, 04-30.
    plan = build_plan(
        1_200_000, Decimal("12"), 3, RepaymentMethod.EQUAL_PRINCIPAL, date(2026, 1, 31)
    )
    first = plan.installments[0]
    assert first == Installment(1, date(2026, 2, 28), 400_000, 12_000, 800_000)
    # Day 10 of a 28-day period: 12,000 × 10 / 28 = 4,285.71 -> 4,286.
    assert interest_accrued_fen(plan, date(2026, 2, 10)) == 4_286
    # Day 1 of the second (31 days): 12,000 + 8,000 × 1 / 31 = 12,000 + 258.06 -> 12,258.
    assert interest_accrued_fen(plan, date(2026, 3, 1)) == 12_258
    # The interest a prepayment settled is earned at once.
    assert interest_accrued_fen(plan, date(2026, 3, 1), extra_fen=77) == 12_335


async def _in_sql(dsn: str, cases: list[tuple[Plan, date]]) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            await conn.fetchval(
                "SELECT interest_accrued_fen($1, $2::date[], $3::bigint[], $4)",
                plan.terms.start,
                [i.due_date for i in plan.installments],
                [i.interest_fen for i in plan.installments],
                day,
            )
            for plan, day in cases
        ]
    finally:
        await conn.close()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(plans(), st.integers(-5, 800)), min_size=20, max_size=40))
def test_the_shards_figure_is_the_calculators(cases_: list[tuple[Plan, int]]) -> None:
    from engine.settings import load_settings

    pairs = [(plan, plan.terms.start + timedelta(days=offset)) for plan, offset in cases_]
    in_sql = asyncio.run(_in_sql(load_settings().shards[0].dsn, pairs))
    assert in_sql == [interest_accrued_fen(plan, day) for plan, day in pairs]


@PROPERTIES
@given(cases(), st.integers(1, 40))
def test_charges_booked_day_by_day_equal_charges_booked_at_once(case, days: int) -> None:  # type: ignore[no-untyped-def]
    state, on, multiplier = case.state, case.on, case.multiplier
    at_once = accrue_overdue(state, on + timedelta(days=days), multiplier)
    stepwise = state
    for n in range(1, days + 1):
        stepwise = accrue_overdue(stepwise, on + timedelta(days=n), multiplier)
    assert stepwise == at_once


@PROPERTIES
@given(cases())
def test_one_days_charge_is_rounded_once_for_the_loan(case) -> None:  # type: ignore[no-untyped-def]
    """MONEY.md: each day's penalty of a loan is its overdue principal × rate × factor /
    360, rounded half-up once; likewise compound on its overdue interest."""
    state, on, multiplier = case.state, case.on, case.multiplier
    nxt = on + timedelta(days=1)
    after = accrue_overdue(state, nxt, multiplier)
    late = [
        (item, status)
        for item, status in zip(state.plan.installments, state.statuses, strict=True)
        if item.due_date < nxt
    ]
    principal = sum(i.principal_fen - s.principal_paid_fen for i, s in late)
    interest = sum(i.interest_fen - s.interest_paid_fen for i, s in late)
    daily = daily_rate_ratio(state.plan.terms.annual_rate_pct * multiplier, 1)
    penalty = sum(s.penalty_unpaid_fen for s in after.statuses) - sum(
        s.penalty_unpaid_fen for s in state.statuses
    )
    compound = sum(s.compound_unpaid_fen for s in after.statuses) - sum(
        s.compound_unpaid_fen for s in state.statuses
    )
    assert penalty == round_fen_ratio(principal * daily.numerator, daily.denominator)
    assert compound == round_fen_ratio(interest * daily.numerator, daily.denominator)


def test_the_days_charge_is_shared_by_what_each_installment_owes() -> None:
    plan = build_plan(
        1_200_000, Decimal("12"), 3, RepaymentMethod.EQUAL_PRINCIPAL, date(2026, 1, 31)
    )
    # Due 02-28 (400,000 + 12,000) and 03-31 (400,000 + 8,000), nothing paid; penalty rate
    # 18 % a year: 1/2000 a day. Through 03-31 the first alone is late, 31 days:
    # 200 a day of penalty, 6 of compound.
    state = accrue_overdue(fresh_state(plan), date(2026, 3, 31))
    assert [(s.penalty_unpaid_fen, s.compound_unpaid_fen) for s in state.statuses] == [
        (200 * 31, 6 * 31),
        (0, 0),
        (0, 0),
    ]
    # On 04-01 both are late: 800,000 / 2000 = 400, shared 200 / 200; compound 20,000 / 2000
    # = 10, shared 6 / 4 by what each owes in interest.
    state = accrue_overdue(state, date(2026, 4, 1))
    assert [(s.penalty_unpaid_fen, s.compound_unpaid_fen) for s in state.statuses] == [
        (200 * 32, 6 * 32),
        (200, 4),
        (0, 0),
    ]

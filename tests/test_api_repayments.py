"""Repayments end to end over HTTP, each checked against the pure calculator."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger import allocation
from ledger.money import format_fen
from ledger.overdue import accrue_overdue, fresh_state
from ledger.prepayment import prepay, principal_for_cash_fen
from ledger.schedule import build_plan
from tests.api_client import ApiClient

RATE = Decimal("4.35")
SetDate = Callable[[dt.date], Awaitable[None]]


@pytest.fixture
async def set_business_date(control_conn: asyncpg.Connection) -> AsyncIterator[SetDate]:
    original = await control_conn.fetchval("SELECT business_date FROM business_clock")

    async def set_to(day: dt.date) -> None:
        await control_conn.execute("UPDATE business_clock SET business_date = $1", day)
        await asyncio.sleep(0.6)  # every worker reloads within 0.2 s in tests

    yield set_to
    await set_to(original)


def fen(text: str) -> int:
    return int(text.replace(".", ""))


async def _loan(
    api: ApiClient, amount: str = "12000.00", **fields: Any
) -> tuple[str, dict[str, Any]]:
    customer_id = await api.customer()
    line_id = await api.line(customer_id, limit="100000.00")
    return customer_id, await api.disbursed_loan(line_id, amount, **fields)


async def _repay(api: ApiClient, customer_id: str, *items: dict[str, Any]) -> Any:
    """POST a repayment; if core was slower than the inline wait (a loaded machine),
    poll it to its final state as a channel would, and return that."""
    body = {
        "customer_id": customer_id,
        "items": list(items),
        "debit_from": api.card_of(customer_id),
    }
    reply = await api.settled_repayment(await api.post("/v1/repayments", body))
    if reply.status == 201:
        assert reply.json["status"] == "succeeded", reply.json
    return reply


async def test_due_installment_paid_on_its_due_date(
    api: ApiClient, set_business_date: SetDate
) -> None:
    customer_id, loan = await _loan(api)
    plan = build_plan(
        1_200_000, RATE, 12, "equal_installment", dt.date.fromisoformat(loan["start_date"])
    )
    first = plan.installments[0]
    await set_business_date(first.due_date)
    reply = await _repay(api, customer_id, {"loan_id": loan["loan_id"], "mode": "due"})
    assert reply.status == 201, reply
    item = reply.json["items"][0]
    assert item["allocation"] == {"penalty": "0.00", "interest": format_fen(first.interest_fen),
                                  "principal": format_fen(first.principal_fen)}  # fmt: skip
    assert item["plan"][0]["status"] == "paid"
    assert fen(item["outstanding_principal"]) == 1_200_000 - first.principal_fen
    nothing = await _repay(api, customer_id, {"loan_id": loan["loan_id"], "mode": "due"})
    assert (nothing.status, nothing.json["code"]) == (422, "NOTHING_DUE")


async def test_the_answer_is_the_repayment_as_read_back(
    api: ApiClient, set_business_date: SetDate
) -> None:
    """A debit completed inline answers with what the completion stored: what a GET of
    the repayment shows (phase A's own answer: test_disbursement's slow-core test)."""
    customer_id, loan = await _loan(api)
    await set_business_date(dt.date.fromisoformat(loan["start_date"]) + dt.timedelta(days=5))
    item = {"loan_id": loan["loan_id"], "mode": "prepay", "amount": "2000.00"}
    body = {"customer_id": customer_id, "items": [item], "debit_from": api.card_of(customer_id)}
    reply = await api.post("/v1/repayments", body)  # core (20 ms) well inside the inline wait
    assert reply.status == 201 and reply.json["status"] == "succeeded", reply
    read_back = await api.get(f"/v1/repayments/{reply.json['repayment_id']}")
    assert read_back.json == reply.json


async def test_overdue_partial_payment_follows_the_waterfall(
    api: ApiClient, set_business_date: SetDate
) -> None:
    customer_id, loan = await _loan(api)
    start = dt.date.fromisoformat(loan["start_date"])
    plan = build_plan(1_200_000, RATE, 12, "equal_installment", start)
    day = plan.installments[1].due_date + dt.timedelta(days=10)  # two installments missed
    await set_business_date(day)
    view = (await api.get(f"/v1/loans/{loan['loan_id']}")).json
    assert view["days_past_due"] == (day - plan.installments[0].due_date).days
    assert view["classification"] == "special_mention"
    expected = allocation.allocate_due(
        accrue_overdue(fresh_state(plan), day, Decimal("1.5")), day, 150_000
    )
    assert expected.penalty_fen > 0
    reply = await _repay(
        api, customer_id, {"loan_id": loan["loan_id"], "mode": "due", "amount": "1500.00"}
    )
    assert reply.status == 201, reply
    assert reply.json["items"][0]["allocation"] == {
        "penalty": format_fen(expected.penalty_fen),
        "interest": format_fen(expected.interest_fen),
        "principal": format_fen(expected.principal_fen),
    }
    too_much = await _repay(
        api, customer_id, {"loan_id": loan["loan_id"], "mode": "due", "amount": "99999.00"}
    )
    assert (too_much.status, too_much.json["code"]) == (422, "AMOUNT_EXCEEDS_DUE")


@pytest.mark.parametrize("rule", ["reduce_nearest", "reduce_amount", "reduce_term"])
async def test_prepayment_rules_match_the_calculator(
    api: ApiClient, set_business_date: SetDate, rule: str
) -> None:
    customer_id, loan = await _loan(api)
    start = dt.date.fromisoformat(loan["start_date"])
    day = start + dt.timedelta(days=10)
    await set_business_date(day)
    state = fresh_state(build_plan(1_200_000, RATE, 12, "equal_installment", start))
    principal = principal_for_cash_fen(state, day, 300_000)
    expected = prepay(state, day, principal, rule)
    item = {"loan_id": loan["loan_id"], "mode": "prepay", "amount": "3000.00", "prepay_rule": rule}
    reply = await _repay(api, customer_id, item)
    assert reply.status == 201, reply
    got = reply.json["items"][0]
    assert got["allocation"]["interest"] == format_fen(expected.interest_fen)
    assert got["allocation"]["principal"] == format_fen(expected.principal_fen)
    assert [(i["due_date"], fen(i["principal"]), fen(i["interest"])) for i in got["plan"]] == [
        (i.due_date.isoformat(), i.principal_fen, i.interest_fen)
        for i in expected.plan.installments
    ]
    schedule = (await api.get(f"/v1/loans/{loan['loan_id']}/schedule")).json
    assert schedule["plan_version"] == 2
    assert len(schedule["installments"]) == len(expected.plan.installments)
    if rule == "reduce_term":
        assert len(expected.plan.installments) < 12


async def test_combined_repayment_is_all_or_nothing(api: ApiClient) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    loans = [(await api.disbursed_loan(line_id, "5000.00"))["loan_id"] for _ in range(2)]
    bad = await _repay(
        api,
        customer_id,
        {"loan_id": loans[0], "mode": "payoff"},
        {"loan_id": loans[1], "mode": "payoff", "amount": "1.00"},
    )
    assert (bad.status, bad.json["code"]) == (422, "PAYOFF_AMOUNT_MISMATCH")
    assert (await api.get(f"/v1/loans/{loans[0]}")).json["status"] == "disbursed"
    good = await _repay(api, customer_id, *({"loan_id": loan, "mode": "payoff"} for loan in loans))
    assert good.status == 201, good
    assert good.json["total"] == "10000.00"  # paid off on the day drawn: no interest
    assert [i["loan_status"] for i in good.json["items"]] == ["settled", "settled"]
    assert (await api.get(f"/v1/loans/{loans[1]}")).json["status"] == "settled"
    assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "0.00"
    again = await _repay(api, customer_id, {"loan_id": loans[0], "mode": "due"})
    assert (again.status, again.json["code"]) == (422, "LOAN_NOT_ACTIVE")
    fetched = await api.get(f"/v1/repayments/{good.json['repayment_id']}")
    assert fetched.status == 200 and fetched.json["total"] == "10000.00"


async def test_other_customers_loan_is_refused(api: ApiClient) -> None:
    _, loan = await _loan(api, "1000.00")
    stranger = await api.customer()
    reply = await _repay(api, stranger, {"loan_id": loan["loan_id"], "mode": "payoff"})
    assert (reply.status, reply.json["code"]) == (404, "LOAN_NOT_FOUND")

"""Repayments end to end over HTTP. Every expected figure is worked out by hand from
MONEY.md (tests/money_by_hand.py, or written out here), never by the calculator under
test; each test also reads the ledger (the repayment's posting, the loan's accounts),
the fake core's debit and the plan."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.settings import Settings
from tests import money_by_hand as hand
from tests.api_client import ApiClient, new_bank_card
from tests.conftest import EngineProcess
from tests.money_checks import (
    core_clock,
    debits_at_core,
    loan_books,
    postings_of,
    repayment_legs,
    set_business_date,
    shard_of,
)

RATE = Decimal("4.35")
PRINCIPAL = 1_200_000
# 12,000.00 at 4.35 % over 12 months, equal installments (MONEY.md): r = 0.003625,
# A = round(1,200,000 · r · (1+r)^12 / ((1+r)^12 − 1)) = 102,372; the first month's
# interest round(1,200,000 · r) = 4,350, its principal 102,372 − 4,350 = 98,022.
PAYMENT, FIRST_INTEREST, FIRST_PRINCIPAL = 102_372, 4_350, 98_022
SetDate = Callable[[dt.date], Awaitable[None]]


@pytest.fixture
async def set_business_date_to(
    api: ApiClient, engine: EngineProcess, control_conn: asyncpg.Connection
) -> AsyncIterator[SetDate]:
    """Moves the business date and waits until every engine worker works on it; puts it
    back afterwards. A loan of its own (never repaid) is the probe each worker quotes."""
    original = await control_conn.fetchval("SELECT business_date FROM business_clock")
    probe = (await api.disbursed_loan(await api.line(await api.customer()), "100.00"))["loan_id"]

    async def set_to(day: dt.date) -> None:
        await set_business_date(control_conn, engine.base_url, probe, day)

    yield set_to
    await set_to(original)


@dataclass
class Loan:
    customer_id: str
    card: str
    line_id: str
    loan_id: str
    start: dt.date


async def _loan(api: ApiClient, amount: str = "12000.00", **fields: Any) -> Loan:
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id, limit="100000.00")
    loan = await api.disbursed_loan(line_id, amount, disburse_to=card, **fields)
    return Loan(
        customer_id, card, line_id, loan["loan_id"], dt.date.fromisoformat(loan["start_date"])
    )


async def _repay(api: ApiClient, loan: Loan, *items: dict[str, Any]) -> Any:
    """POST a repayment from the customer's registered card; if core was slower than the
    inline wait (a loaded machine), poll it to its final state as a channel would."""
    body = {"customer_id": loan.customer_id, "items": list(items), "debit_from": loan.card}
    reply = await api.settled_repayment(await api.post("/v1/repayments", body))
    if reply.status == 201:
        assert reply.json["status"] == "succeeded", reply.json
    return reply


async def _check_money(
    settings: Settings, engine: EngineProcess, http: aiohttp.ClientSession, loan: Loan,
    reply: Any, since: str, split: tuple[int, int, int], *, charges: int = 0,
) -> None:  # fmt: skip
    """One debit at core of the repayment's total, one posting of it, and the loan's
    accounts: principal and receivables moved by exactly the split (penalty, interest,
    principal), the charges booked for the day on the penalty receivable."""
    penalty, interest, principal = split
    total = penalty + interest + principal
    repayment_id = reply.json["repayment_id"]
    assert reply.json["total"] == hand.yuan(total)
    debits = await debits_at_core(http, engine.fakes.core.base_url, loan.card, since)
    assert [(d["reference"], d["amount_fen"], d["status"]) for d in debits] == [
        (f"R{repayment_id}", total, "succeeded")]  # fmt: skip
    async with shard_of(settings, loan.customer_id) as conn:
        assert await postings_of(conn, "repayment", repayment_id) == [
            repayment_legs(total, {loan.loan_id: split}, charges={loan.loan_id: charges})]  # fmt: skip
        books = await loan_books(conn, loan.loan_id)
        owed = await conn.fetchval(
            "SELECT outstanding_principal_fen FROM loan WHERE loan_id = $1", int(loan.loan_id)
        )
    assert (books.principal, books.interest_receivable, books.penalty_receivable) == (
        PRINCIPAL - principal, -interest, charges - penalty)  # fmt: skip
    assert owed == PRINCIPAL - principal
    line = (await api_of(engine, http).get(f"/v1/credit-lines/{loan.line_id}")).json
    assert hand.fen(line["used"]) == PRINCIPAL - principal


def api_of(engine: EngineProcess, http: aiohttp.ClientSession) -> ApiClient:
    return ApiClient(http, engine.base_url)


def _plan(schedule_or_items: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(i["due_date"], hand.fen(i["principal"]), hand.fen(i["interest"]))
            for i in schedule_or_items]  # fmt: skip


async def test_due_installment_paid_on_its_due_date(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings,
    set_business_date_to: SetDate,
) -> None:  # fmt: skip
    loan = await _loan(api)
    payment, rows = hand.equal_installment(PRINCIPAL, RATE, 12, loan.start)
    assert (payment, rows[0].interest_fen, rows[0].principal_fen) == (
        PAYMENT, FIRST_INTEREST, FIRST_PRINCIPAL)  # fmt: skip
    await set_business_date_to(hand.add_months(loan.start, 1))
    since = core_clock()
    reply = await _repay(api, loan, {"loan_id": loan.loan_id, "mode": "due"})
    assert reply.status == 201, reply
    item = reply.json["items"][0]
    assert item["allocation"] == {"penalty": "0.00", "interest": "43.50", "principal": "980.22"}
    assert item["plan"][0]["status"] == "paid"
    assert hand.fen(item["outstanding_principal"]) == PRINCIPAL - FIRST_PRINCIPAL
    assert _plan(item["plan"]) == [(r.due_date.isoformat(), r.principal_fen, r.interest_fen)
                                   for r in rows]  # fmt: skip
    await _check_money(
        settings, engine, http, loan, reply, since, (0, FIRST_INTEREST, FIRST_PRINCIPAL)
    )
    nothing = await _repay(api, loan, {"loan_id": loan.loan_id, "mode": "due"})
    assert (nothing.status, nothing.json["code"]) == (422, "NOTHING_DUE")
    assert len(await debits_at_core(http, engine.fakes.core.base_url, loan.card, since)) == 1


async def test_the_answer_is_the_repayment_as_read_back(
    api: ApiClient, set_business_date_to: SetDate
) -> None:
    """A debit completed inline answers with what the completion stored: what a GET of
    the repayment shows (phase A's own answer: test_disbursement's slow-core test)."""
    loan = await _loan(api)
    await set_business_date_to(loan.start + dt.timedelta(days=5))
    item = {"loan_id": loan.loan_id, "mode": "prepay", "amount": "2000.00"}
    body = {"customer_id": loan.customer_id, "items": [item], "debit_from": loan.card}
    reply = await api.post("/v1/repayments", body)  # core (5 ms) well inside the inline wait
    assert reply.status == 201 and reply.json["status"] == "succeeded", reply
    read_back = await api.get(f"/v1/repayments/{reply.json['repayment_id']}")
    assert read_back.json == reply.json


async def test_overdue_partial_payment_follows_the_waterfall(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings,
    set_business_date_to: SetDate,
) -> None:  # fmt: skip
    loan = await _loan(api)
    _, rows = hand.equal_installment(PRINCIPAL, RATE, 12, loan.start)
    day = rows[1].due_date + dt.timedelta(days=10)  # two installments missed
    await set_business_date_to(day)
    view = (await api.get(f"/v1/loans/{loan.loan_id}")).json
    assert view["days_past_due"] == (day - rows[0].due_date).days
    assert view["classification"] == "special_mention"
    # Penalty on the overdue principal and compound on the overdue interest, 1.5 × the
    # rate, day by day from the day after the first due date, each day rounded once.
    penalty, compound = hand.overdue_charges(rows, RATE, day)
    assert penalty > 0 and compound > 0
    split = hand.waterfall(rows, day, penalty + compound, 150_000)
    # 1,500.00 pays the charges, both installments' interest (43.50, and 39.95 =
    # round(11,019.78 × 0.003625)), then the first installment's principal (980.22) and
    # the rest on the second's.
    assert split[1] == FIRST_INTEREST + rows[1].interest_fen == 4_350 + 3_995
    assert split[2] == 150_000 - penalty - compound - split[1] > FIRST_PRINCIPAL
    since = core_clock()
    reply = await _repay(api, loan, {"loan_id": loan.loan_id, "mode": "due", "amount": "1500.00"})
    assert reply.status == 201, reply
    assert reply.json["items"][0]["allocation"] == {
        "penalty": hand.yuan(split[0]), "interest": hand.yuan(split[1]),
        "principal": hand.yuan(split[2])}  # fmt: skip
    await _check_money(
        settings, engine, http, loan, reply, since, split, charges=penalty + compound
    )
    too_much = await _repay(
        api, loan, {"loan_id": loan.loan_id, "mode": "due", "amount": "99999.00"}
    )
    assert (too_much.status, too_much.json["code"]) == (422, "AMOUNT_EXCEEDS_DUE")
    async with shard_of(settings, loan.customer_id) as conn:  # the refusal booked nothing
        assert (await loan_books(conn, loan.loan_id)).principal == PRINCIPAL - split[2]
    assert len(await debits_at_core(http, engine.fakes.core.base_url, loan.card, since)) == 1


@pytest.mark.parametrize(
    ("rule", "installments", "payment"),
    [("reduce_nearest", 12, PAYMENT), ("reduce_amount", 12, 76_810), ("reduce_term", 9, PAYMENT)],
)
async def test_prepayment_rules(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings,
    set_business_date_to: SetDate, rule: str, installments: int, payment: int,
) -> None:  # fmt: skip
    loan = await _loan(api)
    day = loan.start + dt.timedelta(days=10)
    await set_business_date_to(day)
    # 3,000.00 of cash ten days in: the most principal X with X + round(X × 4.35 % / 360
    # × 10) <= 3,000.00 is 2,996.38, its interest 3.62 (2,996.38 × 0.0435 / 36 = 3.6206).
    principal, interest = hand.prepaid_principal(300_000, RATE, 10)
    assert (principal, interest) == (299_638, 362)
    want = hand.prepay_before_first_due(PRINCIPAL, RATE, 12, loan.start, principal, rule)
    assert len(want) == installments
    assert (
        all(r.principal_fen + r.interest_fen == payment for r in want[1:-1])
        or rule == "reduce_nearest"
    )
    since = core_clock()
    item = {"loan_id": loan.loan_id, "mode": "prepay", "amount": "3000.00", "prepay_rule": rule}
    reply = await _repay(api, loan, item)
    assert reply.status == 201, reply
    got = reply.json["items"][0]
    assert got["allocation"] == {"penalty": "0.00", "interest": "3.62", "principal": "2996.38"}
    expected_rows = [(r.due_date.isoformat(), r.principal_fen, r.interest_fen) for r in want]
    assert _plan(got["plan"]) == expected_rows
    schedule = (await api.get(f"/v1/loans/{loan.loan_id}/schedule")).json
    assert schedule["plan_version"] == 2
    assert _plan(schedule["installments"]) == expected_rows
    await _check_money(settings, engine, http, loan, reply, since, (0, interest, principal))


async def test_combined_repayment_is_all_or_nothing(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id)
    loans = [(await api.disbursed_loan(line_id, "5000.00", disburse_to=card))["loan_id"]
             for _ in range(2)]  # fmt: skip
    who = Loan(customer_id, card, line_id, loans[0], start=dt.date.min)  # start unused
    since = core_clock()
    bad = await _repay(
        api, who,
        {"loan_id": loans[0], "mode": "payoff"},
        {"loan_id": loans[1], "mode": "payoff", "amount": "1.00"},
    )  # fmt: skip
    assert (bad.status, bad.json["code"]) == (422, "PAYOFF_AMOUNT_MISMATCH")
    assert (await api.get(f"/v1/loans/{loans[0]}")).json["status"] == "disbursed"
    good = await _repay(api, who, *({"loan_id": loan, "mode": "payoff"} for loan in loans))
    assert good.status == 201, good
    assert good.json["total"] == "10000.00"  # paid off on the day drawn: no interest
    assert [i["loan_status"] for i in good.json["items"]] == ["settled", "settled"]
    assert (await api.get(f"/v1/loans/{loans[1]}")).json["status"] == "settled"
    assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "0.00"
    # One debit of both, one posting: Dr core 10,000.00 / Cr each loan's principal.
    debits = await debits_at_core(http, engine.fakes.core.base_url, card, since)
    assert [(d["reference"], d["amount_fen"]) for d in debits] == [
        (f"R{good.json['repayment_id']}", 1_000_000)]  # fmt: skip
    async with shard_of(settings, customer_id) as conn:
        assert await postings_of(conn, "repayment", good.json["repayment_id"]) == [
            {"core_settlement": 1_000_000, f"loan_principal:{loans[0]}": -500_000,
             f"loan_principal:{loans[1]}": -500_000}]  # fmt: skip
        for loan_id in loans:
            books = await loan_books(conn, loan_id)
            assert (books.principal, books.interest_receivable, books.penalty_receivable) == (
                0,
                0,
                0,
            )
    again = await _repay(api, who, {"loan_id": loans[0], "mode": "due"})
    assert (again.status, again.json["code"]) == (422, "LOAN_NOT_ACTIVE")
    fetched = await api.get(f"/v1/repayments/{good.json['repayment_id']}")
    assert fetched.status == 200 and fetched.json["total"] == "10000.00"


async def test_other_customers_loan_is_refused(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    loan = await _loan(api, "1000.00")
    card = new_bank_card()
    stranger = Loan(await api.customer(bank_card=card), card, "", loan.loan_id, loan.start)
    since = core_clock()
    reply = await _repay(api, stranger, {"loan_id": loan.loan_id, "mode": "payoff"})
    assert (reply.status, reply.json["code"]) == (404, "LOAN_NOT_FOUND")
    assert await debits_at_core(http, engine.fakes.core.base_url, card, since) == []
    async with shard_of(settings, loan.customer_id) as conn:
        assert (await loan_books(conn, loan.loan_id)).principal == 100_000

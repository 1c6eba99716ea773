"""A loan's life after its drawdown, through the API and the day-end, on an engine and a
relay of the test's own databases (the shared ones must not be charged or frozen):

    due date: the day-end debits the card through core; core refuses (no money)
    3 days late: penalty booked daily, class 关注, lines frozen, a collection case
    the channel cannot lift the bank's freeze; an operator can; cases are reassigned
    paid: the next day-end cures the loan, closes the case
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from engine.settings import Settings
from tests.api_client import ApiClient, Reply, new_bank_card
from tests.conftest import EngineProcess, Fakes
from tests.isolated import Isolated
from tests.money_checks import engine_sees_date
from tests.waiting import eventually

DAY = dt.date(2026, 11, 16)
ONE = dt.timedelta(days=1)
OPERATOR = {"X-Operator-Token": "demo-operator"}


@pytest.fixture
async def books(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"version": "v1", "rules": [
        {"name": "freeze", "when": {"dpd_above": 0}, "action": "freeze_lines"},
        {"name": "collect", "when": {"dpd_above": 2}, "action": "collection_queue"},
    ]}))  # fmt: skip
    isolated = Isolated(settings.control_dsn.rsplit("/", 1)[0], tmp_path,
                        {"ENGINE_EOD_RULES_FILE": str(rules)})  # fmt: skip
    await isolated.create(DAY)
    for officer, name in (("officer-a", "甲"), ("officer-b", "乙")):
        added = isolated.cli("-m", "engine", "officers", "add", officer, "--tenant", "demo",
                             "--name", name)  # fmt: skip
        assert added.returncode == 0, added.stderr
    try:
        yield isolated
    finally:
        await isolated.drop()


@pytest.fixture
def own_engine(books: Isolated, fakes: Fakes) -> Iterator[EngineProcess]:
    proc = EngineProcess(fakes, workers=1, extra_env=books.env)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(own_engine: EngineProcess, http: aiohttp.ClientSession) -> ApiClient:
    return ApiClient(http, own_engine.base_url)


async def _core(http: aiohttp.ClientSession, engine: EngineProcess, **knobs: object) -> None:
    async with http.post(f"{engine.fakes.core.base_url}/fake/knobs", json=knobs) as resp:
        assert resp.status == 200, await resp.text()


async def _until(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def _day_end(books: Isolated, day: dt.date, engine: EngineProcess, probe_loan: str) -> None:
    """Close `day`, then wait until the engine dates its answers by the next one (it
    reloads reference data every 0.2 s here): `probe_loan`'s payoff quote is of that day."""
    [outcome] = await books.eod(day)
    assert outcome.closed, outcome
    seen = await eventually(lambda: engine_sees_date(engine.base_url, probe_loan, day + ONE),
                            bool, timeout_s=30, interval_s=0.1)  # fmt: skip
    assert seen, f"the engine did not take up {day + ONE}"


async def _missed_first_debit(
    books: Isolated, api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> tuple[str, str, str, str, dt.date]:
    """A customer, card, line and loan whose first installment's auto-debit core
    refused (core left refusing): up to the day before the first due date in one jump
    (the day-end of DAY accrues from the drawdown), then the due date's day-end."""
    card = new_bank_card()
    customer = await api.customer(bank_card=card)
    line = await api.line(customer)
    loan = await api.disbursed_loan(line, "1200.00", term_months=3, disburse_to=card,
                                    repayment_method="equal_principal")  # fmt: skip
    loan_id, due = loan["loan_id"], dt.date.fromisoformat(loan["plan"]["first_due_date"])
    await _day_end(books, DAY, engine, loan_id)
    assert books.cli("-m", "engine", "clock", "set", str(due)).returncode == 0
    await _core(http, engine, fail_ratio=1.0)
    await _day_end(books, due, engine, loan_id)
    await _until(debit_failed_again(books, 1))
    return customer, card, line, loan_id, due


async def test_a_loan_from_missed_debit_to_cure(
    books: Isolated, api: ApiClient, own_engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    customer, card, line, loan_id, due = await _missed_first_debit(books, api, own_engine, http)
    for n in range(1, 4):
        await _day_end(books, due + n * ONE, own_engine, loan_id)
        await _until(debit_failed_again(books, n + 1))
    assert await books.problems(accrued_through=due + 3 * ONE) == []

    viewed = (await api.get(f"/v1/loans/{loan_id}")).json
    assert viewed["days_past_due"] == 4  # the business date is the fourth day late now
    assert viewed["classification"] == "special_mention"
    assert viewed["classification_since"] == str(due + ONE)
    listed = (await api.get(f"/v1/customers/{customer}/loans")).json["loans"]
    assert [(v["loan_id"], v["classification"], v["classification_since"]) for v in listed] == [
        (loan_id, "special_mention", str(due + ONE))
    ]  # the customer's list shows the day-end's class too
    assert Decimal(viewed["penalty_accrued"]) > 0
    quote = (await api.get(f"/v1/loans/{loan_id}/payoff-quote")).json
    assert Decimal(quote["penalty"]) >= Decimal(viewed["penalty_accrued"])

    line_view = (await api.get(f"/v1/credit-lines/{line}")).json
    assert (line_view["status"], line_view["frozen_by"]) == ("frozen", "rule")
    refused = await api.drawdown(line, "100.00")
    assert (refused.status, refused.json["code"]) == (422, "CREDIT_LINE_FROZEN")
    lift = await api.post(f"/v1/credit-lines/{line}/unfreeze", {"reason": "customer asked"})
    assert (lift.status, lift.json["code"]) == (422, "CREDIT_LINE_FROZEN_BY_BANK")

    queue = await api.get("/v1/collection-queue", headers=OPERATOR, sign=False)
    assert queue.status == 200, queue
    [case] = queue.json["cases"]
    assert (case["loan_id"], case["dpd_at_open"], case["status"]) == (loan_id, 3, "open")
    other = "officer-b" if case["officer_id"] == "officer-a" else "officer-a"
    moved = await api.post(f"/v1/collection-cases/{loan_id}/reassign", {"officer_id": other},
                           headers=OPERATOR, sign=False)  # fmt: skip
    assert (moved.status, moved.json["officer_id"]) == (200, other)
    mine = await api.get(f"/v1/collection-queue?officer={other}", headers=OPERATOR, sign=False)
    assert [c["loan_id"] for c in mine.json["cases"]] == [loan_id]
    unknown = await api.post(f"/v1/collection-cases/{loan_id}/reassign",
                             {"officer_id": "nobody"}, headers=OPERATOR, sign=False)  # fmt: skip
    assert (unknown.status, unknown.json["code"]) == (422, "OFFICER_UNKNOWN")
    no_token = await api.get("/v1/collection-queue", sign=False)
    assert (no_token.status, no_token.json["code"]) == (401, "AUTH_OPERATOR_REQUIRED")

    # The customer pays everything due; the next day-end cures the loan.
    await _core(http, own_engine, fail_ratio=0.0)
    paid = await api.settled_repayment(await api.post("/v1/repayments", {
        "customer_id": customer, "debit_from": card,
        "items": [{"loan_id": loan_id, "mode": "due"}]}))  # fmt: skip
    assert (paid.status, paid.json["status"]) == (201, "succeeded"), paid
    await _day_end(books, due + 4 * ONE, own_engine, loan_id)
    viewed = (await api.get(f"/v1/loans/{loan_id}")).json
    assert (viewed["days_past_due"], viewed["classification"]) == (0, "normal")
    closed = await api.get("/v1/collection-queue", headers=OPERATOR, sign=False)
    assert closed.json["cases"] == []
    # The freeze stays until an operator lifts it.
    unfrozen = await api.post(f"/v1/operator/credit-lines/{line}/unfreeze",
                              {"reason": "paid up"}, headers=OPERATOR, sign=False)  # fmt: skip
    assert (unfrozen.status, unfrozen.json["status"], unfrozen.json["frozen_by"]) == (
        200, "active", None)  # fmt: skip
    assert await books.problems() == []


def debit_failed_again(books: Isolated, count: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        rows = await books_rows(books, "SELECT status FROM repayment WHERE channel_id = 'eod'")
        return len(rows) == count and {r[0] for r in rows} == {"failed"}

    return check


async def books_rows(books: Isolated, sql: str) -> list[tuple[object, ...]]:
    import asyncpg

    rows: list[tuple[object, ...]] = []
    for dsn in books.shard_dsns:
        conn = await asyncpg.connect(dsn)
        try:
            rows += [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return rows


@pytest.fixture
async def small_chunks(settings: Settings, tmp_path: Path) -> AsyncIterator[Isolated]:
    config = tmp_path / "engine.toml"
    config.write_text("[eod]\naccrual_chunk = 20\noverdue_chunk = 5\ndeduct_chunk = 5\n")
    isolated = Isolated(settings.control_dsn.rsplit("/", 1)[0], tmp_path,
                        {"ENGINE_CONFIG": str(config)})  # fmt: skip
    await isolated.create(DAY)
    try:
        yield isolated
    finally:
        await isolated.drop()


async def test_online_traffic_flows_while_the_day_end_runs(
    small_chunks: Isolated, fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """Drawdowns and prepayments on the seeded customers the whole time the day-end of
    DAY runs in many small chunks: every request answered, none refused for a lock or
    a busy shard, the day closed, and the books whole."""
    from loadtest.client_data import read_seeded

    books = small_chunks
    books.seed(200)
    customers = read_seeded(books.tmp / "seeded.csv")
    proc = EngineProcess(fakes, workers=1, extra_env=books.env)
    try:
        proc.wait_ready()
        api = ApiClient(http, proc.base_url)
        day_end = asyncio.create_task(books.eod(DAY))
        answers: list[Reply] = []
        n = 0
        while not day_end.done():
            customer = customers[n % len(customers)]
            draw = api.drawdown(customer.credit_line_id, "10.00", disburse_to=customer.bank_card)
            pay = api.post("/v1/repayments", {
                "customer_id": customer.customer_id, "debit_from": customer.bank_card,
                "items": [{"loan_id": customer.loan_ids[n % 4], "mode": "prepay",
                           "amount": "1.00"}]})  # fmt: skip
            answers += await asyncio.gather(draw, pay)
            n += 1
        [outcome] = await day_end
    finally:
        proc.stop()
    assert outcome.closed, outcome
    assert n >= 5, "the day-end must have run alongside traffic"
    statuses = {(a.status, a.json.get("code")) for a in answers}
    # Refused by the rules, never by a lock or a busy shard: a prepayment on a loan with an
    # installment due (ARREARS_FIRST), or on one the day-end is debiting (its auto-debit is
    # in progress).
    allowed = {(201, None), (422, "ARREARS_FIRST"), (422, "REPAYMENT_IN_PROGRESS")}
    assert statuses <= allowed, statuses
    assert await books.problems() == []


async def test_a_case_no_officer_took_shows_in_every_officers_queue(
    books: Isolated, api: ApiClient
) -> None:
    """A branch and bank without officers open the case `unassigned`: each officer of
    the bank sees it beside their own, and not another officer's."""
    import asyncpg

    from sharding.ids import shard_of_id

    card = new_bank_card()
    customer = await api.customer(bank_card=card)
    line = await api.line(customer)
    loans = [(await api.disbursed_loan(line, "300.00", disburse_to=card))["loan_id"]
             for _ in range(2)]  # fmt: skip
    shard = books.settings.shard_map().physical_for(shard_of_id(int(customer)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        for loan_id, officer in zip(loans, ("unassigned", "officer-b"), strict=True):
            await conn.execute(
                """INSERT INTO collection_case (loan_id, customer_id, tenant_id, branch_code,
                       officer_id, opened_on, dpd_at_open)
                   SELECT loan_id, customer_id, tenant_id, '001', $2, $3, 31
                   FROM loan WHERE loan_id = $1""",
                int(loan_id), officer, DAY,
            )  # fmt: skip
    finally:
        await conn.close()
    queue = await api.get("/v1/collection-queue?officer=officer-a", headers=OPERATOR, sign=False)
    assert queue.status == 200, queue
    assert [(c["loan_id"], c["officer_id"]) for c in queue.json["cases"]] == [
        (loans[0], "unassigned")
    ]
    everyone = await api.get("/v1/collection-queue", headers=OPERATOR, sign=False)
    assert sorted(c["loan_id"] for c in everyone.json["cases"]) == sorted(loans)


async def test_an_operators_lift_of_a_rules_freeze_holds_until_the_cure(
    books: Isolated, api: ApiClient, own_engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    """The rule freezes a late customer's lines at every day-end; an operator who lifts
    it while the customer is still late (a plan agreed with the officer) keeps it lifted
    the next night. The cure ends the waiver, so a later delinquency freezes again."""
    customer, card, line, loan_id, due = await _missed_first_debit(books, api, own_engine, http)
    await _day_end(books, due + ONE, own_engine, loan_id)  # a day late: the rule freezes
    await _until(debit_failed_again(books, 2))
    frozen = (await api.get(f"/v1/credit-lines/{line}")).json
    assert (frozen["status"], frozen["frozen_by"]) == ("frozen", "rule")

    lifted = await api.post(f"/v1/operator/credit-lines/{line}/unfreeze",
                            {"reason": "plan agreed"}, headers=OPERATOR, sign=False)  # fmt: skip
    assert (lifted.status, lifted.json["status"]) == (200, "active"), lifted
    await _day_end(books, due + 2 * ONE, own_engine, loan_id)  # still late
    await _until(debit_failed_again(books, 3))
    assert (await api.get(f"/v1/loans/{loan_id}")).json["days_past_due"] == 3  # on due + 3
    kept = (await api.get(f"/v1/credit-lines/{line}")).json
    assert (kept["status"], kept["frozen_by"]) == ("active", None)  # the lift held
    assert await books_rows(books, "SELECT rule_freeze_waived FROM credit_line") == [(True,)]

    await _core(http, own_engine, fail_ratio=0.0)
    paid = await api.settled_repayment(await api.post("/v1/repayments", {
        "customer_id": customer, "debit_from": card,
        "items": [{"loan_id": loan_id, "mode": "due"}]}))  # fmt: skip
    assert (paid.status, paid.json["status"]) == (201, "succeeded"), paid
    await _day_end(books, due + 3 * ONE, own_engine, loan_id)  # cured: the waiver ends
    assert (await api.get(f"/v1/loans/{loan_id}")).json["days_past_due"] == 0
    assert await books_rows(books, "SELECT rule_freeze_waived FROM credit_line") == [(False,)]

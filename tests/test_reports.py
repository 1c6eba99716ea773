"""Reports per member bank and for the union (issue 19), from the ledger: the union's
outstanding principal is the trial balance's loan principal to the fen and the sum of
its banks'; a bank sees only its own; the daily flow counts what was done; the NPL ratio
follows the day-end's five-category class; JSON, CSV and the CLI agree."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg

from engine.reports import ledger_reports as reports
from engine.settings import Settings
from ledger.money import parse_amount as _parse_amount
from ledger.store import account_balances
from sharding.ids import shard_of_id
from sharding.pools import ShardPools
from tests.api_client import ApiClient, Reply
from tests.conftest import EngineProcess, run_cli
from tests.tenant_helpers import OPERATOR, as_bank, bank_b, customer_b


def parse_amount(text: str) -> int:
    """Fen of a report's amount; the union's `(unattributed)` row may be negative (the
    ledger's own tests post any amount to loan accounts no loan owns)."""
    negative = text.startswith("-")
    fen = _parse_amount(text.removeprefix("-"), allow_zero=True)
    return -fen if negative else fen


async def _report(api: ApiClient, name: str, tenant: str | None = None, **query: str) -> Reply:
    """As bank `tenant`'s admin, else the union's; `tenant_id=` asks for one bank."""
    if "tenant_id" in query:
        query["tenant"] = query.pop("tenant_id")
    path = f"/v1/reports/{name}"
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    headers = as_bank(tenant) if tenant else OPERATOR
    return await api.request("GET", path, headers=headers, sign=False)


async def _trial_loan_principal(settings: Settings) -> int:
    total = 0
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            total += (await account_balances(conn)).get("loan_principal", 0)
        finally:
            await conn.close()
    return total


async def _book(api_b: ApiClient, api: ApiClient) -> dict[str, Any]:
    """A loan in each bank and a repayment in bank B."""
    mine = await api.customer()
    line_a = await api.line(mine)
    await api.disbursed_loan(line_a, "3000.00")
    customer = await customer_b(api_b)
    line = await api_b.line(customer, product_code="demo2-credit")
    loan = await api_b.disbursed_loan(line, "5000.00")
    repaid = await api_b.settled_repayment(await api_b.post("/v1/repayments", {
        "customer_id": customer, "debit_from": api_b.card_of(customer),
        "items": [{"loan_id": loan["loan_id"], "mode": "prepay", "amount": "1000.00"}]}))  # fmt: skip
    assert repaid.status == 201 and repaid.json["status"] == "succeeded", repaid
    return {"loan": loan["loan_id"], "repaid": repaid.json["total"]}


async def test_outstanding_reconciles_with_the_trial_balance_and_the_banks(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    await _book(bank_b(engine, http), api)
    union = await _report(api, "outstanding-by-product")
    trial_fen = await _trial_loan_principal(settings)
    assert union.status == 200, union
    total_fen = parse_amount(union.json["total_outstanding_principal"])
    assert total_fen == trial_fen
    assert sum(parse_amount(r["outstanding_principal"]) for r in union.json["rows"]) == total_fen
    by_bank: dict[str, int] = {}
    for row in union.json["rows"]:
        by_bank[row["tenant_id"]] = by_bank.get(row["tenant_id"], 0) + parse_amount(
            row["outstanding_principal"]
        )
    for bank in ("demo", "demo2"):
        own = await _report(api, "outstanding-by-product", tenant=bank)
        assert own.status == 200 and own.json["scope"] == bank, own
        assert {r["tenant_id"] for r in own.json["rows"]} == {bank}
        assert parse_amount(own.json["total_outstanding_principal"]) == by_bank[bank]
        # the union's operator asking for one bank gets the same
        one = await _report(api, "outstanding-by-product", tenant=None, tenant_id=bank)
        assert one.json["rows"] == own.json["rows"]
    # A bank never sees another's report.
    for name in ("outstanding-by-product", "daily-flow", "asset-quality"):
        foreign = await _report(api, name, tenant="demo", tenant_id="demo2")
        assert (foreign.status, foreign.json["code"]) == (404, "TENANT_NOT_FOUND"), name


async def test_daily_flow_counts_what_was_done(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    api_b = bank_b(engine, http)
    before = await _report(api, "daily-flow", tenant="demo2")
    done = await _book(api_b, api)
    after = await _report(api, "daily-flow", tenant="demo2")
    assert after.status == 200 and [r["tenant_id"] for r in after.json["rows"]] == ["demo2"]
    was, now = before.json["total"], after.json["total"]

    def moved(line: str) -> tuple[int, Decimal]:
        return (
            now[line]["count"] - was[line]["count"],
            Decimal(now[line]["amount"]) - Decimal(was[line]["amount"]),
        )

    assert moved("drawdowns") == (1, Decimal("5000.00"))
    assert moved("repayments") == (1, Decimal(done["repaid"]))
    assert Decimal(now["repaid_principal"]) - Decimal(was["repaid_principal"]) > 0
    for query, accept in (("?format=csv", "*/*"), ("", "text/csv")):
        async with http.get(
            f"{engine.base_url}/v1/reports/daily-flow{query}",
            headers=as_bank("demo2") | {"Accept": accept},
        ) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert [r["tenant_id"] for r in rows] == ["demo2", "total"]
        assert rows[-1]["drawdowns_amount"] == now["drawdowns"]["amount"]
        assert rows[-1]["repayments_count"] == str(now["repayments"]["count"])


async def test_npl_ratio_follows_the_day_end_classification(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """A loan of bank B classed substandard by a day-end (its loan_class_change, as the
    day-end writes it): NPL and the ratio move by its principal, to the fen."""
    api_b = bank_b(engine, http)
    before = (await _report(api, "asset-quality", tenant="demo2")).json["total"]
    done = await _book(api_b, api)
    loan_id = int(done["loan"])
    conn = await asyncpg.connect(settings.shard_map().physical_for(shard_of_id(loan_id)).dsn)
    try:
        row = await conn.fetchrow(
            "SELECT customer_id, outstanding_principal_fen FROM loan WHERE loan_id = $1", loan_id
        )
        await conn.execute(
            """INSERT INTO loan_class_change (loan_id, customer_id, business_date, from_class,
                   to_class, days_past_due)
               VALUES ($1, $2, (SELECT min(business_date) FROM ledger_txn WHERE ref_id = $1),
                       'normal', 'substandard', 95)""",
            loan_id,
            row["customer_id"],
        )
    finally:
        await conn.close()
    report = await _report(api, "asset-quality", tenant="demo2")
    after = report.json["total"]
    principal = row["outstanding_principal_fen"]
    assert parse_amount(after["substandard"]) - parse_amount(before["substandard"]) == principal
    npl, total = parse_amount(after["npl"]), parse_amount(after["outstanding_principal"])
    assert after["npl_ratio"] == str((Decimal(npl) / Decimal(total)).quantize(Decimal("0.000001")))
    assert after["overdue_loans"] == before["overdue_loans"] + 1
    # The union's report holds the same bank row, and the CLI prints the same figures.
    union = (await _report(api, "asset-quality")).json
    [bank_row] = [r for r in union["rows"] if r["tenant_id"] == "demo2"]
    assert bank_row == report.json["rows"][0]
    cli = run_cli("report", "asset-quality", "--tenant", "demo2", env=engine.env)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["total"] == after


async def test_history_from_the_legs_equals_the_running_totals(settings: Settings) -> None:
    """A date before the business date is computed from the legs posted on or before it;
    over every posting that must be what the running account totals say."""
    pools = ShardPools(settings.shard_map(), settings.pool, "test-reports")
    await pools.open()
    try:
        far = dt.date(2099, 12, 31)
        now = await reports.outstanding_by_product(pools, None, far, today=far)
        legs = await reports.outstanding_by_product(pools, None, far, today=dt.date(2100, 1, 1))
        assert now.rows == legs.rows and now.rows
        quality_now = await reports.asset_quality(pools, None, far, far, None)
        quality_legs = await reports.asset_quality(pools, None, far, dt.date(2100, 1, 1), None)
        assert quality_now.total == quality_legs.total
        before_all = await reports.outstanding_by_product(
            pools, None, dt.date(2000, 1, 1), today=far
        )
        assert before_all.total_outstanding_principal == "0.00"
    finally:
        await pools.close()

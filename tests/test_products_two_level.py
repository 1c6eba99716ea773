"""Two-level products and the regulatory rules (issue 19): a member bank adopts a union
template inside its ranges, pauses and resumes it, every change is a version and a line
keeps its own; the regional rule and the consumer loan's five years at application, line
and drawdown; a member bank's admin confined to its own bank."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.contract.errors import Unprocessable
from engine.contract.messages import RepaymentCreate, RepaymentItemCreate
from engine.security.identity import make_id_number
from engine.security.pii import PiiCipher
from engine.services.repayments import open_repayment
from engine.settings import Settings
from engine.stores.reference import Channel, load_reference
from sharding.ids import IdGenerator, shard_of_id
from tests.api_client import ApiClient, Reply, channel_known
from tests.conftest import EngineProcess, run_cli
from tests.origination_helpers import application, apply, born
from tests.tenant_helpers import OPERATOR, as_bank, id_number_in

TEMPLATE = {
    "name": "测试模板", "loan_kind": "business",
    "repayment_methods": ["equal_installment", "grace_then_equal_installment", "bullet"],
    "term_months_min": 1, "term_months_max": 36, "bullet_term_months_max": 12,
    "grace_months_max": 6, "line_limit_min": "1000.00", "line_limit_max": "300000.00",
    "annual_rate_pct_floor": "3.00", "annual_rate_pct_cap": "18.00",
    "penalty_multiplier_min": "1.3", "penalty_multiplier_max": "1.5",
    "prepay_rules": ["reduce_nearest", "reduce_term"],
}  # fmt: skip


def _code(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def _op(api: ApiClient, method: str, path: str, body: Any = None,
              tenant: str | None = None) -> Reply:  # fmt: skip
    headers = as_bank(tenant) if tenant else OPERATOR
    return await api.request(method, path, body, headers=headers, sign=False)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """The other engine workers see a control change within the reference refresh."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "not seen by every worker in time"
        await asyncio.sleep(0.1)


async def _new_bank(api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession,
                    regions: list[str]) -> tuple[str, ApiClient]:  # fmt: skip
    tenant = _code("tb")
    made = await _op(api, "POST", "/v1/admin/tenants",
                     {"tenant_id": tenant, "name": "测试农商行", "region_codes": regions})  # fmt: skip
    assert made.status == 201 and made.json["parent_id"] == "union", made
    channel = _code("ch")
    done = run_cli("channels", "add", channel, "--tenant", tenant, env=engine.env)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip().rsplit(" ", 1)[-1]
    client = ApiClient(http, engine.base_url, channel=channel, secret=secret)

    await _eventually(lambda: channel_known(engine.base_url, channel, secret))
    return tenant, client


async def _template(api: ApiClient, **fields: Any) -> str:
    code = _code("tpl")
    made = await _op(api, "POST", "/v1/admin/product-templates",
                     TEMPLATE | {"template_code": code} | fields)  # fmt: skip
    assert made.status == 201, made
    return code


async def _customer(client: ApiClient, tenant: str, region6: str) -> str:
    return await client.customer(tenant_id=tenant, id_number=id_number_in(region6))


def _line_body(customer: str, product: str, **fields: Any) -> dict[str, Any]:
    return {
        "customer_id": customer, "product_code": product, "limit": "50000.00",
        "annual_rate_pct": "6.00", "max_term_months": 24, "expires_on": "2030-12-31",
        "repayment_methods": ["equal_installment", "grace_then_equal_installment"],
    } | fields  # fmt: skip


async def test_adoption_inside_the_ranges_versions_pause_and_lines_keeping_theirs(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    tenant, bank = await _new_bank(api, engine, http, ["4201"])
    template = await _template(api)
    product = _code("p")
    adopt = {"product_code": product, "template_code": template, "tenant_id": tenant,
             "term_months_max": 24, "annual_rate_pct_min": "4.00",
             "annual_rate_pct_max": "12.00"}  # fmt: skip

    # A value outside the union's range: 422 naming the field and the range, nothing kept.
    outside = await _op(api, "POST", "/v1/admin/products", adopt | {"annual_rate_pct_max": "19.00"})
    assert (outside.status, outside.json["code"]) == (422, "PRODUCT_VALUE_OUT_OF_RANGE")
    assert (
        "annual_rate_pct_max" in outside.json["detail"] and "3.00..18.00" in outside.json["detail"]
    )
    assert (await _op(api, "GET", f"/v1/admin/products/{product}")).status == 404

    # The bank's own admin adopts for itself; another bank's admin cannot see it.
    adopted = await _op(api, "POST", "/v1/admin/products", adopt, tenant=tenant)
    assert adopted.status == 201 and adopted.json["version"] == 1, adopted
    for method, path, body in (
        ("GET", f"/v1/admin/products/{product}", None),
        ("PATCH", f"/v1/admin/products/{product}", {"grace_months_max": 1}),
        ("POST", f"/v1/admin/products/{product}/pause", {"reason": "x"}),
        ("GET", f"/v1/admin/products/{product}/versions", None),
    ):
        foreign = await _op(api, method, path, body, tenant="demo2")
        assert (foreign.status, foreign.json["code"]) == (404, "PRODUCT_NOT_FOUND"), path
    listed = await _op(api, "GET", "/v1/admin/products", tenant="demo2")
    assert product not in {p["product_code"] for p in listed.json["products"]}
    # ... nor edit the union's templates.
    edit = await _op(api, "PUT", f"/v1/admin/product-templates/{template}", TEMPLATE, tenant=tenant)
    assert (edit.status, edit.json["code"]) == (403, "UNION_ONLY")

    async def line_ok() -> bool:
        reply = await bank.post("/v1/credit-lines", _line_body(customer, product))
        if reply.status == 201:
            lines.append(reply.json)
        return reply.status == 201

    customer = await _customer(bank, tenant, "420102")
    lines: list[Any] = []
    await _eventually(line_ok)
    old_line = lines[-1]["credit_line_id"]
    assert lines[-1]["product_version"] == 1
    bank.line_customers[old_line] = customer

    # A new version: no grace any more. The old line keeps version 1's terms.
    changed = await _op(api, "PATCH", f"/v1/admin/products/{product}", {"grace_months_max": 0},
                        tenant=tenant)  # fmt: skip
    assert changed.status == 200 and changed.json["version"] == 2, changed

    async def new_line_on_v2() -> bool:
        reply = await bank.post("/v1/credit-lines", _line_body(customer, product))
        if reply.status == 201 and reply.json["product_version"] == 2:
            lines.append(reply.json)
            return True
        return False

    await _eventually(new_line_on_v2)
    new_line = lines[-1]["credit_line_id"]
    bank.line_customers[new_line] = customer
    grace = {"repayment_method": "grace_then_equal_installment", "grace_months": 3}

    async def grace_refused() -> bool:  # by every worker, once it holds version 2
        reply = await bank.drawdown(new_line, "1000.00", **grace)
        return reply.status == 422 and reply.json.get("code") == "GRACE_NOT_ALLOWED"

    await _eventually(grace_refused)
    on_v1 = await bank.drawdown(old_line, "1000.00", **grace)
    assert on_v1.status == 201, on_v1
    loan = on_v1.json["loan_id"]
    await bank.wait_for_loan(loan)

    # Paused: no new lines or drawdowns; the loan keeps servicing (a repayment).
    paused = await _op(api, "POST", f"/v1/admin/products/{product}/pause",
                       {"reason": "季度额度用尽"}, tenant=tenant)  # fmt: skip
    assert paused.status == 200 and paused.json["status"] == "paused", paused

    async def drawdown_paused() -> bool:
        reply = await bank.drawdown(old_line, "100.00")
        return reply.status == 422 and reply.json.get("code") == "PRODUCT_PAUSED"

    async def line_paused() -> bool:
        reply = await bank.post("/v1/credit-lines", _line_body(customer, product))
        return reply.status == 422 and reply.json.get("code") == "PRODUCT_PAUSED"

    # Each engine worker reloads on its own: refused by both, within the refresh.
    await _eventually(drawdown_paused)
    await _eventually(line_paused)
    repaid = await bank.post("/v1/repayments", {
        "customer_id": customer, "debit_from": bank.card_of(customer),
        "items": [{"loan_id": loan, "mode": "prepay", "amount": "100.00"}]})  # fmt: skip
    repaid = await bank.settled_repayment(repaid)
    assert repaid.status == 201 and repaid.json["status"] == "succeeded", repaid

    resumed = await _op(api, "POST", f"/v1/admin/products/{product}/resume", {"reason": "ok"})
    assert resumed.status == 200 and resumed.json["version"] == 4, resumed

    async def drawdown_again() -> bool:
        return (await bank.drawdown(old_line, "100.00")).status == 201

    await _eventually(drawdown_again)
    versions = await _op(api, "GET", f"/v1/admin/products/{product}/versions", tenant=tenant)
    assert [(v["version"], v["terms"]["status"], v["terms"]["grace_months_max"])
            for v in versions.json["versions"]] == [
        (1, "active", 6), (2, "active", 0), (3, "paused", 0), (4, "active", 0)]  # fmt: skip


async def test_prepayment_rules_are_those_of_the_loans_product_version(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """A product allows some prepayment rules (among its template's, its default one of
    them); a loan prepays by those of the version its line was granted under, whatever
    later versions allow, on the request's path at once and on the locked one."""
    tenant, bank = await _new_bank(api, engine, http, ["4201"])
    template = await _template(api)  # reduce_nearest and reduce_term
    product = _code("p")
    adopt = {"product_code": product, "template_code": template, "tenant_id": tenant}
    for values, code in (
        ({"prepay_rules": ["reduce_amount"]}, "PRODUCT_VALUE_OUT_OF_RANGE"),  # not the union's
        ({"prepay_rules": ["reduce_term"]}, "PRODUCT_VALUE_INVALID"),  # default reduce_nearest
    ):
        refused = await _op(api, "POST", "/v1/admin/products", adopt | values)
        assert (refused.status, refused.json["code"]) == (422, code), refused
    adopted = await _op(api, "POST", "/v1/admin/products", adopt | {
        "prepay_rules": ["reduce_term"], "prepay_rule_default": "reduce_term"})  # fmt: skip
    assert adopted.status == 201, adopted
    assert (adopted.json["prepay_rules"], adopted.json["prepay_rule_default"]) == (
        ["reduce_term"], "reduce_term")  # fmt: skip
    customer = await _customer(bank, tenant, "420102")
    lines: list[str] = []

    async def line_on(version: int) -> bool:
        reply = await bank.post("/v1/credit-lines", _line_body(customer, product))
        assert reply.status in (201, 422), reply  # 422: a worker that does not know it yet
        if reply.status == 201 and reply.json["product_version"] == version:
            lines.append(reply.json["credit_line_id"])
            bank.line_customers[lines[-1]] = customer
            return True
        return False

    await _eventually(lambda: line_on(1))
    old_loan = (await bank.disbursed_loan(lines[-1]))["loan_id"]
    changed = await _op(api, "PATCH", f"/v1/admin/products/{product}",
                        {"prepay_rules": ["reduce_nearest", "reduce_term"],
                         "prepay_rule_default": "reduce_nearest"}, tenant=tenant)  # fmt: skip
    assert changed.status == 200 and changed.json["version"] == 2, changed
    await _eventually(lambda: line_on(2))
    new_loan = (await bank.disbursed_loan(lines[-1]))["loan_id"]

    async def prepay(loan: str, **rule: str) -> Reply:
        item = {"loan_id": loan, "mode": "prepay", "amount": "100.00"} | rule
        reply = await bank.post("/v1/repayments", {
            "customer_id": customer, "debit_from": bank.card_of(customer), "items": [item]})  # fmt: skip
        return await bank.settled_repayment(reply)

    # Version 1's loan: reduce_nearest is not its rule, though version 2 allows it.
    refused = await prepay(old_loan, prepay_rule="reduce_nearest")
    assert (refused.status, refused.json["code"]) == (422, "PREPAY_RULE_NOT_ALLOWED"), refused
    assert "reduce_term" in refused.json["detail"]
    by_default = await prepay(old_loan)  # version 1's default
    assert by_default.status == 201 and by_default.json["status"] == "succeeded", by_default
    assert by_default.json["items"][0]["prepay_rule"] == "reduce_term"

    async def prepaid_on_v2() -> bool:
        # A worker still on version 1's data refuses for a moment; it never applies
        # version 1's rules to a loan of version 2.
        reply = await prepay(new_loan, prepay_rule="reduce_nearest")
        if reply.status == 503:
            assert reply.json["code"] == "REFERENCE_DATA_BEHIND", reply
            return False
        assert reply.status == 201 and reply.json["status"] == "succeeded", reply
        return True

    await _eventually(prepaid_on_v2)

    # The locked path (phase A in a transaction) refuses it the same way.
    crypto = settings.crypto
    cipher = PiiCipher.from_config(crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key)
    control = await asyncpg.create_pool(settings.control_dsn, min_size=1, max_size=1)
    shard = settings.shard_map().physical_for(shard_of_id(int(customer)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        reference = await load_reference(control, cipher)
        body = RepaymentCreate(customer, [RepaymentItemCreate(
            old_loan, "prepay", "100.00", "reduce_nearest")], bank.card_of(customer))  # fmt: skip
        tx = conn.transaction()
        await tx.start()
        try:
            with pytest.raises(Unprocessable) as locked:
                await open_repayment(
                    conn, ids=IdGenerator(126, lambda: True), cipher=cipher,
                    reference=reference, channel=Channel(bank.channel, tenant, "", True),
                    body=body, key=_code("k"), today=reference.business_date,
                )  # fmt: skip
        finally:
            await tx.rollback()
    finally:
        await conn.close()
        await control.close()
    assert locked.value.code == "PREPAY_RULE_NOT_ALLOWED"

    versions = await _op(api, "GET", f"/v1/admin/products/{product}/versions", tenant=tenant)
    assert [v["terms"]["prepay_rules"] for v in versions.json["versions"]] == [
        ["reduce_term"], ["reduce_nearest", "reduce_term"]]  # fmt: skip


async def test_the_demo_products_allow_every_prepayment_rule(api: ApiClient) -> None:
    demo = await _op(api, "GET", "/v1/admin/products/demo-credit")
    assert demo.json["prepay_rules"] == ["reduce_amount", "reduce_nearest", "reduce_term"]


async def test_region_rule_at_line_and_drawdown(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    tenant, bank = await _new_bank(api, engine, http, ["4201"])
    template = await _template(api)
    product = _code("p")
    adopted = await _op(api, "POST", "/v1/admin/products",
                        {"product_code": product, "template_code": template, "tenant_id": tenant})  # fmt: skip
    assert adopted.status == 201, adopted
    local = await _customer(bank, tenant, "420102")
    elsewhere = await _customer(bank, tenant, "110105")
    lines: list[str] = []

    async def local_line() -> bool:
        reply = await bank.post("/v1/credit-lines", _line_body(local, product))
        if reply.status == 201:
            lines.append(reply.json["credit_line_id"])
        return reply.status == 201

    await _eventually(local_line)
    bank.line_customers[lines[0]] = local

    async def far_refused() -> bool:
        reply = await bank.post("/v1/credit-lines", _line_body(elsewhere, product))
        assert reply.status != 201, reply  # never granted
        return reply.json.get("code") == "REGION_NOT_SERVED"

    await _eventually(far_refused)

    # The bank's registered regions change (the union's operator): the drawdown is refused.
    moved = await _op(api, "PATCH", f"/v1/admin/tenants/{tenant}", {"region_codes": ["4202"]})
    assert moved.status == 200 and moved.json["region_codes"] == ["4202"], moved
    member_edit = await _op(api, "PATCH", f"/v1/admin/tenants/{tenant}",
                            {"region_codes": ["11"]}, tenant=tenant)  # fmt: skip
    assert (member_edit.status, member_edit.json["code"]) == (403, "UNION_ONLY")

    async def drawdown_refused() -> bool:
        reply = await bank.drawdown(lines[0], "100.00")
        return reply.status == 422 and reply.json.get("code") == "REGION_NOT_SERVED"

    await _eventually(drawdown_refused)


async def test_region_and_five_years_at_application(api: ApiClient) -> None:
    """Bank demo lends in 1101 (Beijing's city districts) only; a consumer loan runs
    five years at most. Both refused before anything is stored or asked of anyone."""
    far = await api.post("/v1/applications", application(id_number_in("420102")))
    assert (far.status, far.json["code"]) == (422, "REGION_NOT_SERVED"), far
    by_residence = await api.post("/v1/customers", {
        "tenant_id": "demo", "name": "乙", "id_number": id_number_in("110105"),
        "phone": "13900000001", "bank_card": "6222021234567890128",
        "residence_region": "4201"})  # fmt: skip
    assert by_residence.status == 400  # a residence is a 6-digit area code
    long = await api.post("/v1/applications", application(
        id_number_in("110105"), product_code="demo-consumer", requested_term_months=72))  # fmt: skip
    assert (long.status, long.json["code"]) == (422, "TERM_EXCEEDS_REGULATORY_MAX"), long


async def test_a_consumer_template_longer_than_five_years_is_refused(api: ApiClient) -> None:
    code = _code("tpl")
    body = TEMPLATE | {"template_code": code, "loan_kind": "consumer", "term_months_max": 72}
    refused = await _op(api, "POST", "/v1/admin/product-templates", body)
    assert (refused.status, refused.json["code"]) == (422, "TERM_EXCEEDS_REGULATORY_MAX")
    assert (await _op(api, "GET", f"/v1/admin/product-templates/{code}")).status == 404
    made = await _op(api, "POST", "/v1/admin/product-templates", body | {"term_months_max": 60})
    assert made.status == 201, made
    again = await _op(api, "PUT", f"/v1/admin/product-templates/{code}",
                      TEMPLATE | {"loan_kind": "consumer", "term_months_max": 61})  # fmt: skip
    assert (again.status, again.json["code"]) == (422, "TERM_EXCEEDS_REGULATORY_MAX")
    kept = await _op(api, "GET", f"/v1/admin/product-templates/{code}")
    assert (kept.json["version"], kept.json["term_months_max"]) == (1, 60)


async def test_an_automatic_refusal_can_go_to_manual_review(api: ApiClient) -> None:
    """The report shows a current overdue: refused by a rule of the report, not a hard
    one: the applicant asks for review; an officer approves. An
    under-age refusal (hard) stays final."""
    body = application(born(1980))
    body["applicant"]["name"] = "张逾期"  # the fake bureau's current overdue profile
    refused = await apply(api, body)
    assert refused.json["status"] == "refused", refused
    assert "BUREAU_CURRENT_OVERDUE" in refused.json["decision"]["reasons"]
    application_id = refused.json["application_id"]
    review = await api.post(f"/v1/applications/{application_id}/manual-review")
    assert review.status == 200 and review.json["status"] == "pending_review", review
    assert "MANUAL_REVIEW_REQUESTED" in review.json["decision"]["reasons"]
    twice = await api.post(f"/v1/applications/{application_id}/manual-review")
    assert (twice.status, twice.json["code"]) == (422, "MANUAL_REVIEW_NOT_AVAILABLE")
    queue = await api.get("/v1/review-queue", headers=OPERATOR, sign=False)
    assert application_id in {a["application_id"] for a in queue.json["applications"]}
    approved = await api.post(f"/v1/applications/{application_id}/approve",
                              {"reason": "人工复核通过"}, headers=OPERATOR, sign=False)  # fmt: skip
    assert approved.status == 200 and approved.json["status"] == "approved", approved

    child = await apply(api, application(make_id_number("110105", dt.date(2015, 3, 1), "002")))
    assert child.json["status"] == "refused", child
    final = await api.post(f"/v1/applications/{child.json['application_id']}/manual-review")
    assert (final.status, final.json["code"]) == (422, "MANUAL_REVIEW_NOT_AVAILABLE")


def test_a_member_bank_and_its_product_from_the_command_line(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """README's commands: a member bank, its channel, an adoption, a refusal, a pause."""
    tenant = _code("cli")
    made = run_cli("tenants", "add", tenant, "--name", "孝感农商银行", "--regions", "4209",
                   env=engine.env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["region_codes"] == ["4209"]
    channel = run_cli("channels", "add", f"{tenant}-app", "--tenant", tenant, env=engine.env)
    assert channel.returncode == 0 and "secret (shown once)" in channel.stdout, channel.stderr
    product = _code("p")
    body = tmp_path / "adopt.json"
    body.write_text(json.dumps({"product_code": product, "template_code": "demo-credit",
                                "tenant_id": tenant, "annual_rate_pct_max": "30.00"}))  # fmt: skip
    refused = run_cli("products", "adopt", str(body), env=engine.env)
    assert refused.returncode == 2 and "PRODUCT_VALUE_OUT_OF_RANGE" in refused.stderr
    body.write_text(json.dumps({"product_code": product, "template_code": "demo-credit",
                                "tenant_id": tenant, "annual_rate_pct_max": "12.00"}))  # fmt: skip
    adopted = run_cli("products", "adopt", str(body), env=engine.env)
    assert adopted.returncode == 0, adopted.stderr
    assert json.loads(adopted.stdout)["annual_rate_pct_max"] == "12.00"
    paused = run_cli("products", "pause", product, "--reason", "测试", env=engine.env)
    assert paused.returncode == 0 and json.loads(paused.stdout)["status"] == "paused"
    versions = run_cli("products", "versions", product, env=engine.env)
    assert [v["version"] for v in json.loads(versions.stdout)["versions"]] == [1, 2]

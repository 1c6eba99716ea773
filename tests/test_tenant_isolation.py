"""A channel of one member bank never reads or moves another's data (issue 19).

Bank B (`demo2`) makes one of everything — customer, card, line, loan, repayment,
application, contract — and bank A's channel (`demo`) calls EVERY channel route of the
app's router with B's ids: each answers 404 (never 403: existence is not leaked), and
B's data reads back the same afterwards. A route added to the router without a case
here fails the test, so none slips through.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from engine.http.app import create_app
from engine.http.operator_auth import OPERATOR_PATHS
from engine.security.identity import make_id_number
from engine.settings import Settings
from tests.api_client import ApiClient, Reply, new_bank_card
from tests.conftest import EngineProcess
from tests.operator_helpers import as_role
from tests.origination_helpers import (
    SIGNER,
    application,
    apply,
    approved_white_listed,
    born,
    import_list,
)
from tests.tenant_helpers import OPERATOR, bank_b, customer_b, id_number_in

Ids = dict[str, str]
# (method, route) -> (concrete path, body) with bank B's ids; A's own ids where a body
# mixes them (A's customer repaying B's loan).
Case = Callable[[Ids], tuple[str, Any]]


def _cases() -> dict[tuple[str, str], Case]:
    return {
        ("POST", "/v1/customers/{customer_id}/cards"): lambda i: (
            f"/v1/customers/{i['customer']}/cards", {"bank_card": new_bank_card()}),
        ("GET", "/v1/customers/{customer_id}/cards"): lambda i: (
            f"/v1/customers/{i['customer']}/cards", None),
        ("GET", "/v1/customers/{customer_id}/loans"): lambda i: (
            f"/v1/customers/{i['customer']}/loans", None),
        ("POST", "/v1/credit-lines"): lambda i: ("/v1/credit-lines", {
            "customer_id": i["customer"], "product_code": "demo-credit", "limit": "1000.00",
            "annual_rate_pct": "4.35", "repayment_methods": ["equal_installment"],
            "max_term_months": 12, "expires_on": "2030-12-31"}),
        ("GET", "/v1/credit-lines/{line_id}"): lambda i: (f"/v1/credit-lines/{i['line']}", None),
        ("POST", "/v1/credit-lines/{line_id}/freeze"): lambda i: (
            f"/v1/credit-lines/{i['line']}/freeze", {"reason": "crossing"}),
        ("POST", "/v1/credit-lines/{line_id}/unfreeze"): lambda i: (
            f"/v1/credit-lines/{i['line']}/unfreeze", {"reason": "crossing"}),
        ("POST", "/v1/drawdowns"): lambda i: ("/v1/drawdowns", {
            "credit_line_id": i["line"], "amount": "100.00", "term_months": 6,
            "repayment_method": "equal_installment", "disburse_to": i["card"]}),
        ("GET", "/v1/loans/{loan_id}"): lambda i: (f"/v1/loans/{i['loan']}", None),
        ("GET", "/v1/loans/{loan_id}/schedule"): lambda i: (
            f"/v1/loans/{i['loan']}/schedule", None),
        ("GET", "/v1/loans/{loan_id}/payoff-quote"): lambda i: (
            f"/v1/loans/{i['loan']}/payoff-quote", None),
        ("POST", "/v1/repayments"): lambda i: ("/v1/repayments", {
            "customer_id": i["customer"], "debit_from": i["card"],
            "items": [{"loan_id": i["loan"], "mode": "prepay", "amount": "10.00"}]}),
        ("GET", "/v1/repayments/{repayment_id}"): lambda i: (
            f"/v1/repayments/{i['repayment']}", None),
        ("GET", "/v1/applications/{application_id}"): lambda i: (
            f"/v1/applications/{i['application']}", None),
        ("POST", "/v1/applications/{application_id}/manual-review"): lambda i: (
            f"/v1/applications/{i['refused_application']}/manual-review", None),
        ("POST", "/v1/contracts/{contract_id}/otp"): lambda i: (
            f"/v1/contracts/{i['contract']}/otp", None),
        ("POST", "/v1/contracts/{contract_id}/sign"): lambda i: (
            f"/v1/contracts/{i['contract']}/sign", {"confirmed": True, "otp": "123456"}),
        ("GET", "/v1/contracts/{contract_id}"): lambda i: (f"/v1/contracts/{i['contract']}", None),
    }  # fmt: skip


# Routes whose body names a tenant rather than a row: refused with 403 TENANT_FORBIDDEN
# whichever tenant is named (so no tenant's existence is told), tested below.
TENANT_NAMED = {("POST", "/v1/customers"), ("POST", "/v1/applications")}
# A's own customer naming B's loan: refused as if the loan did not exist.
MIXED = "mixed repayment"


def _channel_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    routes = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if not canonical.startswith("/v1/") or route.method == "HEAD":
            continue
        concrete = re.sub(r"\{[a-z_]+\}", "12345", canonical)
        if OPERATOR_PATHS.match(concrete) is None:  # operators' routes: not a channel's
            routes.add((route.method, canonical))
    return routes


def test_every_channel_route_has_a_crossing_case(settings: Settings) -> None:
    missing = _channel_routes(settings) - set(_cases()) - TENANT_NAMED
    assert not missing, f"routes without a tenant-crossing case: {sorted(missing)}"


async def _bank_b_world(
    api_b: ApiClient, engine: EngineProcess, tmp_path: Path
) -> tuple[Ids, Callable[[], Any]]:
    customer = await customer_b(api_b)
    line = await api_b.line(customer, product_code="demo2-credit")
    loan = (await api_b.disbursed_loan(line, "2000.00"))["loan_id"]
    card = api_b.card_of(customer)
    repaid = await api_b.post("/v1/repayments", {
        "customer_id": customer, "debit_from": card,
        "items": [{"loan_id": loan, "mode": "prepay", "amount": "100.00"}]})  # fmt: skip
    repaid = await api_b.settled_repayment(repaid)
    assert repaid.status == 201 and repaid.json["status"] == "succeeded", repaid
    # An approved application (white-listed: approved at once) with its contract.
    id_number = id_number_in("420102")
    import_list(
        engine, tmp_path / "white-b.csv", "whitelist",
        "tenant_id,id_number,limit,annual_rate_pct,repayment_methods,max_term_months\n"
        f"demo2,{id_number},50000.00,5.40,equal_installment,12\n",
    )  # fmt: skip
    approved = await apply(
        api_b, application(id_number, tenant_id="demo2", product_code="demo2-credit")
    )
    assert approved.status == 201 and approved.json["status"] == "approved", approved
    # An automatic refusal (under age is hard; a refusal by the bureau's rules is not:
    # any refused application serves, the route must 404 before looking at it).
    refused = await apply(
        api_b,
        application(make_id_number("420102", dt.date(2015, 1, 1), "001"),
                    tenant_id="demo2", product_code="demo2-credit"),
    )  # fmt: skip
    assert refused.status == 201 and refused.json["status"] == "refused", refused
    ids = {
        "customer": customer, "line": line, "loan": loan, "card": card,
        "repayment": repaid.json["repayment_id"],
        "application": approved.json["application_id"],
        "contract": approved.json["contract_id"],
        "refused_application": refused.json["application_id"],
    }  # fmt: skip

    async def snapshot() -> Any:
        reads = [
            f"/v1/customers/{customer}/cards", f"/v1/customers/{customer}/loans",
            f"/v1/credit-lines/{line}", f"/v1/loans/{loan}", f"/v1/loans/{loan}/schedule",
            f"/v1/repayments/{ids['repayment']}", f"/v1/applications/{ids['application']}",
            f"/v1/applications/{ids['refused_application']}",
            f"/v1/contracts/{ids['contract']}",
        ]  # fmt: skip
        seen = {}
        for path in reads:
            reply = await api_b.get(path)
            assert reply.status == 200, (path, reply)
            seen[path] = reply.json
        return seen

    return ids, snapshot


async def test_bank_a_gets_404_for_every_id_of_bank_b(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
    tmp_path: Path,
) -> None:
    api_b = bank_b(engine, http)
    ids, snapshot = await _bank_b_world(api_b, engine, tmp_path)
    before = await snapshot()
    answers: dict[str, Reply] = {}
    for (method, route), case in sorted(_cases().items()):
        path, body = case(ids)
        reply = await api.request(method, path, body, headers=SIGNER)  # sign reads them first
        answers[f"{method} {route}"] = reply
    # A's own customer and card, repaying B's loan.
    mine = await api.customer()
    answers[MIXED] = await api.post("/v1/repayments", {
        "customer_id": mine, "debit_from": api.card_of(mine),
        "items": [{"loan_id": ids["loan"], "mode": "prepay", "amount": "10.00"}]})  # fmt: skip
    wrong = {name: (r.status, r.json) for name, r in answers.items() if r.status != 404}
    assert not wrong, wrong
    for name, reply in answers.items():
        assert reply.json["code"].endswith("_NOT_FOUND"), (name, reply)
    assert await snapshot() == before  # nothing of B's changed


async def test_a_body_naming_another_tenant_is_refused_without_telling_it_exists(
    api: ApiClient,
) -> None:
    """The two routes whose body names a tenant: the same 403 for a real other bank and
    for a tenant that does not exist."""
    for tenant in ("demo2", "no-such-bank"):
        customer = await api.post("/v1/customers", {
            "tenant_id": tenant, "name": "甲", "id_number": id_number_in("110105"),
            "phone": "13900000000", "bank_card": new_bank_card()})  # fmt: skip
        assert (customer.status, customer.json["code"]) == (403, "TENANT_FORBIDDEN")
        applied = await api.post(
            "/v1/applications", application(id_number_in("110105"), tenant_id=tenant)
        )
        assert (applied.status, applied.json["code"]) == (403, "TENANT_FORBIDDEN")


async def test_another_banks_product_is_unknown_to_a_channel(api: ApiClient) -> None:
    """A line on bank B's product, asked by bank A: the same refusal as no such product."""
    customer = await api.customer()
    answers = []
    for product in ("demo2-credit", "no-such-product"):
        reply = await api.post("/v1/credit-lines", {
            "customer_id": customer, "product_code": product, "limit": "1000.00",
            "annual_rate_pct": "4.35", "repayment_methods": ["equal_installment"],
            "max_term_months": 12, "expires_on": "2030-12-31"})  # fmt: skip
        answers.append((reply.status, reply.json["code"]))
    assert answers == [(422, "PRODUCT_UNKNOWN")] * 2


async def test_a_member_banks_operator_sees_and_moves_only_its_own_bank(
    api: ApiClient, engine: EngineProcess, tmp_path: Path
) -> None:
    """The operator routes take their scope from the operator: bank demo2's approver and
    officer does not see demo's review queue, and demo's application, line and contract
    are not found for it; the union's operator sees them."""
    pending = await apply(api, application(born(1990)))
    assert pending.json["status"] == "pending_review", pending
    approved = await approved_white_listed(api, engine, tmp_path)
    line, contract = approved["credit_line_id"], approved["contract_id"]
    b_admin = await as_role(api, "demo2", "approver", "officer")

    async def operator(method: str, path: str, body: Any = None, headers: Any = b_admin) -> Reply:
        return await api.request(method, path, body, headers=headers, sign=False)

    queue = await operator("GET", "/v1/review-queue")
    assert queue.status == 200
    assert pending.json["application_id"] not in {
        a["application_id"] for a in queue.json["applications"]
    }
    union_queue = await operator("GET", "/v1/review-queue", headers=OPERATOR)
    assert pending.json["application_id"] in {
        a["application_id"] for a in union_queue.json["applications"]
    }
    approve = await operator(
        "POST", f"/v1/applications/{pending.json['application_id']}/approve", {"reason": "x"}
    )
    assert approve.json["code"] == "APPLICATION_NOT_FOUND", approve
    freeze = await operator("POST", f"/v1/operator/credit-lines/{line}/freeze", {"reason": "x"})
    assert (freeze.status, freeze.json["code"]) == (404, "CREDIT_LINE_NOT_FOUND")
    read = await operator("GET", f"/v1/contracts/{contract}")
    assert (read.status, read.json["code"]) == (404, "CONTRACT_NOT_FOUND")
    met = await operator("POST", f"/v1/contracts/{contract}/face-to-face", {
        "officer": "王", "place": "城关支行", "met_at": "2026-01-01T00:00:00+00:00"})  # fmt: skip
    assert (met.status, met.json["code"]) == (404, "CONTRACT_NOT_FOUND")
    cases = await operator("GET", "/v1/collection-queue")
    assert all(c["tenant_id"] == "demo2" for c in cases.json["cases"])
    # Nothing moved: the application still waits, the line is active.
    assert (await api.get(f"/v1/applications/{pending.json['application_id']}")).json[
        "status"
    ] == "pending_review"
    assert (await api.get(f"/v1/credit-lines/{line}")).json["status"] == "active"

"""The channel API end to end over HTTP: customers, lines, drawdowns, reads."""

from __future__ import annotations

import asyncpg

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, new_bank_card, new_id_number, new_phone


async def test_customer_registration_masks_and_encrypts(api: ApiClient, settings: Settings) -> None:
    id_number, phone, card = new_id_number(), new_phone(), new_bank_card()
    body = {
        "tenant_id": "demo",
        "name": "王小二",
        "id_number": id_number,
        "phone": phone,
        "bank_card": card,
    }
    reply = await api.post("/v1/customers", body)
    assert reply.status == 201, reply
    view = reply.json
    assert view["id_number_masked"] == id_number[:3] + "*" * 11 + id_number[-4:]
    assert view["phone_masked"] == phone[:3] + "****" + phone[-4:]
    assert view["name_masked"] == "王**"
    for secret in (id_number, phone, card):
        assert secret not in reply.raw.decode()
    customer_id = int(view["customer_id"])
    shard = settings.shard_map().physical_for(shard_of_id(customer_id))
    conn = await asyncpg.connect(shard.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM customer WHERE customer_id = $1", customer_id)
    finally:
        await conn.close()
    assert row is not None
    stored = b"".join(bytes(v) for v in row.values() if isinstance(v, bytes))
    for secret in (id_number, phone, card, "王小二"):
        assert secret.encode() not in stored
        assert secret not in str(dict(row))


async def test_same_person_twice_is_refused_with_the_existing_id(api: ApiClient) -> None:
    id_number = new_id_number()
    first = await api.customer(id_number=id_number)
    again = await api.post(
        "/v1/customers",
        {"tenant_id": "demo", "name": "李四", "id_number": id_number.lower(), "phone": new_phone(),
         "bank_card": new_bank_card()},
    )  # fmt: skip
    assert again.status == 409, again
    assert again.json["code"] == "CUSTOMER_EXISTS"
    assert again.json["customer_id"] == first


async def test_drawdown_books_loan_plan_and_line(api: ApiClient) -> None:
    line_id = await api.line(await api.customer(), limit="50000.00")
    reply = await api.drawdown(line_id, "12000.00", term_months=12)
    assert reply.status == 201, reply
    loan = reply.json
    assert loan["status"] == "disbursing"  # the relay pays the card through core banking
    await api.wait_for_loan(loan["loan_id"])
    assert loan["receipt_no"].startswith("JJ")
    assert loan["plan"]["installments"] == 12
    line = await api.get(f"/v1/credit-lines/{line_id}")
    assert (line.json["used"], line.json["available"]) == ("12000.00", "38000.00")
    read = await api.get(f"/v1/loans/{loan['loan_id']}")
    assert read.status == 200
    assert read.json["outstanding_principal"] == "12000.00"
    assert read.json["classification"] == "normal"
    schedule = await api.get(f"/v1/loans/{loan['loan_id']}/schedule")
    principal_fen = sum(int(i["principal"].replace(".", "")) for i in schedule.json["installments"])
    assert principal_fen == 1_200_000
    loans = await api.get(f"/v1/customers/{loan['customer_id']}/loans")
    assert [item["loan_id"] for item in loans.json["loans"]] == [loan["loan_id"]]


async def test_freeze_and_unfreeze(api: ApiClient) -> None:
    line_id = await api.line(await api.customer())
    frozen = await api.post(f"/v1/credit-lines/{line_id}/freeze", {"reason": "post-loan check"})
    assert frozen.status == 200 and frozen.json["status"] == "frozen"
    refused = await api.drawdown(line_id)
    assert (refused.status, refused.json["code"]) == (422, "CREDIT_LINE_FROZEN")
    thawed = await api.post(f"/v1/credit-lines/{line_id}/unfreeze", {"reason": "cleared"})
    assert thawed.json["status"] == "active"
    assert (await api.drawdown(line_id)).status == 201


async def test_payoff_quote(api: ApiClient) -> None:
    line_id = await api.line(await api.customer())
    loan = await api.disbursed_loan(line_id, "10000.00")
    quote = await api.get(f"/v1/loans/{loan['loan_id']}/payoff-quote?on={loan['start_date']}")
    assert quote.status == 200, quote
    assert quote.json["total"] == "10000.00"  # paid off on the day it was drawn: no interest


async def test_every_response_carries_a_request_id(api: ApiClient) -> None:
    reply = await api.get("/v1/loans/123", headers={"X-Request-Id": "trace-42"})
    assert reply.status == 404, reply.headers
    assert reply.headers["X-Request-Id"] == "trace-42"
    assert reply.json["request_id"] == "trace-42"

"""Issue 21, item 2: money goes only to and from cards bound to the customer — the
registered card, and cards bound through POST /v1/customers/{id}/cards after the
four-factor verification found them to be the customer's. A channel (compromised, say)
can neither pay a customer's drawdown to its own card nor debit a stranger's card;
each attempt is refused 422 CARD_NOT_BOUND with nothing moved."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import asyncpg
import pytest

from engine.security.pii import dev_cipher
from engine.settings import Settings
from engine.stores.control_admin import add_channel
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, new_bank_card


def card_ending_0000() -> str:
    """A valid card the fake verifier says belongs to nobody we ask about (…0000)."""
    while True:
        card = new_bank_card()[:-4]
        body = card + "000"
        total = 0
        for position, char in enumerate(reversed(body)):
            digit = int(char)
            if position % 2 == 0:
                digit = digit * 2 - 9 if digit * 2 > 9 else digit * 2
            total += digit
        if (10 - total % 10) % 10 == 0:
            return body + "0"


async def state(settings: Settings, customer_id: str) -> dict[str, object]:
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM loan WHERE customer_id = $1) AS loans,
                      (SELECT coalesce(sum(used_fen), 0) FROM credit_line
                       WHERE customer_id = $1) AS used_fen,
                      (SELECT count(*) FROM repayment WHERE customer_id = $1) AS repayments,
                      (SELECT count(*) FROM outbox WHERE customer_id = $1) AS orders,
                      (SELECT count(*) FROM ledger_txn WHERE customer_id = $1
                       AND kind IN ('drawdown', 'repayment')) AS postings,
                      (SELECT count(*) FROM customer_card WHERE customer_id = $1) AS cards""",
            int(customer_id),
        )
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


async def test_a_drawdown_to_a_card_not_bound_is_refused(
    api: ApiClient, settings: Settings
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    before = await state(settings, customer_id)
    channels_own_card = new_bank_card()
    reply = await api.drawdown(line_id, "5000.00", disburse_to=channels_own_card)
    assert (reply.status, reply.json["code"]) == (422, "CARD_NOT_BOUND"), reply
    assert await state(settings, customer_id) == before
    assert (await api.drawdown(line_id, "5000.00")).status == 201  # the registered card


async def test_a_repayment_from_a_strangers_card_is_refused(
    api: ApiClient, settings: Settings
) -> None:
    customer_id, stranger = await api.customer(), await api.customer()
    loan = await api.disbursed_loan(await api.line(customer_id), "3000.00")
    before = await state(settings, customer_id)
    body = {"customer_id": customer_id, "debit_from": api.card_of(stranger),
            "items": [{"loan_id": loan["loan_id"], "mode": "prepay", "amount": "100.00"}]}  # fmt: skip
    reply = await api.post("/v1/repayments", body)
    assert (reply.status, reply.json["code"]) == (422, "CARD_NOT_BOUND"), reply
    assert await state(settings, customer_id) == before
    paid = await api.settled_repayment(
        await api.post("/v1/repayments", body | {"debit_from": api.card_of(customer_id)})
    )
    assert (paid.status, paid.json["status"]) == (201, "succeeded"), paid


async def test_a_card_is_bound_by_a_signed_verified_audited_call(
    api: ApiClient, settings: Settings
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    second = new_bank_card()
    key = "bind-" + secrets.token_hex(6)
    bound = await api.post(f"/v1/customers/{customer_id}/cards", {"bank_card": second}, key=key)
    assert bound.status == 201, bound
    assert bound.json["source"] == "added" and bound.json["verified"] is True
    assert bound.json["bound_by_channel"] == api.channel
    assert bound.json["card_masked"] == second[:3] + "*" * 12 + second[-4:]
    again = await api.post(f"/v1/customers/{customer_id}/cards", {"bank_card": second}, key=key)
    assert again.headers.get("Idempotent-Replayed") == "true"  # the same call, replayed
    twice = await api.post(f"/v1/customers/{customer_id}/cards", {"bank_card": second})
    assert (twice.status, twice.json["code"]) == (409, "CARD_ALREADY_BOUND")
    listed = (await api.get(f"/v1/customers/{customer_id}/cards")).json["cards"]
    assert [c["source"] for c in listed] == ["registered", "added"]
    assert (await api.drawdown(line_id, "1000.00", disburse_to=second)).status == 201
    # the audit row: who bound it, under which key
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT channel_id, idem_key FROM customer_card WHERE source = 'added' "
            "AND customer_id = $1",
            int(customer_id),
        )
        assert row is not None and (row["channel_id"], row["idem_key"]) == (api.channel, key)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # append-only
            await conn.execute("DELETE FROM customer_card WHERE customer_id = $1", int(customer_id))
    finally:
        await conn.close()


async def test_the_channels_own_card_fails_verification_and_stays_unbound(
    api: ApiClient, settings: Settings
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    before = await state(settings, customer_id)
    not_theirs = card_ending_0000()
    refused = await api.post(f"/v1/customers/{customer_id}/cards", {"bank_card": not_theirs})
    assert (refused.status, refused.json["code"]) == (422, "CARD_NOT_VERIFIED"), refused
    assert await state(settings, customer_id) == before
    drawdown = await api.drawdown(line_id, "1000.00", disburse_to=not_theirs)
    assert (drawdown.status, drawdown.json["code"]) == (422, "CARD_NOT_BOUND")
    assert await state(settings, customer_id) == before


async def test_another_tenants_customer_cannot_be_given_a_card(
    api: ApiClient, http: aiohttp.ClientSession, control_conn: asyncpg.Connection
) -> None:
    await control_conn.execute(
        "INSERT INTO tenant (tenant_id, name) VALUES ('other', 'Other bank') ON CONFLICT DO NOTHING"
    )
    channel_id, secret = "other-" + secrets.token_hex(4), secrets.token_urlsafe(16)
    await add_channel(control_conn, dev_cipher(), channel_id, "other", secret)
    await asyncio.sleep(0.6)
    customer_id = await api.customer()
    other = ApiClient(http, api.base_url, channel_id, secret)
    reply = await other.post(f"/v1/customers/{customer_id}/cards", {"bank_card": new_bank_card()})
    assert (reply.status, reply.json["code"]) == (404, "CUSTOMER_NOT_FOUND"), reply
    listed = await other.get(f"/v1/customers/{customer_id}/cards")
    assert (listed.status, listed.json["code"]) == (404, "CUSTOMER_NOT_FOUND")

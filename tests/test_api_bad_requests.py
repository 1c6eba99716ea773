"""A table of bad requests: each gets its status and stable code, and nothing is written.
Each test has a line of its own: none depends on what another wrote."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.security.pii import dev_cipher
from engine.security.signing import signed_headers
from engine.settings import Settings
from engine.stores.control_admin import add_channel
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, Reply, channel_known, new_bank_card
from tests.conftest import EngineProcess
from tests.waiting import eventually

OTHER_SECRET = "other-tenant-secret"


@pytest.fixture(scope="module")
async def other_api(
    engine: EngineProcess, http: aiohttp.ClientSession, control_conn: asyncpg.Connection
) -> AsyncIterator[ApiClient]:
    """A channel of another tenant."""
    await control_conn.execute(
        "INSERT INTO tenant (tenant_id, name) VALUES ('other', 'Other bank') ON CONFLICT DO NOTHING"
    )
    if await control_conn.fetchval("SELECT 1 FROM channel WHERE channel_id = 'other-ch'") is None:
        await add_channel(control_conn, dev_cipher(), "other-ch", "other", OTHER_SECRET)
    # Until every worker knows the channel (they reload reference data every 0.2 s).
    known = await eventually(lambda: channel_known(engine.base_url, "other-ch", OTHER_SECRET), bool, timeout_s=30,
                             interval_s=0.1)  # fmt: skip
    assert known, "the engine did not take up channel other-ch"
    yield ApiClient(http, engine.base_url, "other-ch", OTHER_SECRET)


# The card bound to each line's customer (its registered card): drawdowns pay it.
_CARDS: dict[str, str] = {}


@pytest.fixture
async def line(api: ApiClient) -> tuple[str, str]:
    """A customer and a line of this test's own."""
    customer_id = await api.customer()
    line_id = await api.line(customer_id, limit="20000.00", max_term_months=24)
    _CARDS[line_id] = api.card_of(customer_id)
    return customer_id, line_id


def _drawdown(line_id: str, **fields: Any) -> dict[str, Any]:
    card = _CARDS.get(line_id) or new_bank_card()
    return {"credit_line_id": line_id, "amount": "1000.00", "term_months": 12,
            "repayment_method": "equal_installment", "disburse_to": card} | fields  # fmt: skip


async def _raw_post(api: ApiClient, path: str, data: bytes, headers: dict[str, str]) -> Reply:
    sent = {
        "Content-Type": "application/json",
        "Idempotency-Key": "k-" + str(time.time_ns()),
    } | headers
    async with api.session.post(api.base_url + path, data=data, headers=sent) as resp:
        from multidict import CIMultiDict

        return Reply(resp.status, await resp.read(), CIMultiDict(resp.headers))


def _signed(api: ApiClient, data: bytes, **overrides: Any) -> dict[str, str]:
    """Signed (version 2) with a fresh Idempotency-Key, which the headers carry."""
    overrides.setdefault("idempotency_key", "k-" + str(time.time_ns()))
    return signed_headers(api.channel, api.secret, "POST", "/v1/drawdowns", data, **overrides)


AUTH_CASES = ["bad_signature", "stale_timestamp", "unknown_channel", "missing_headers", "bad_nonce"]


@pytest.mark.parametrize("case", AUTH_CASES)
async def test_authentication_failures(api: ApiClient, line: tuple[str, str], case: str) -> None:
    data = json.dumps(_drawdown(line[1])).encode()
    headers = _signed(api, data)
    expected = {
        "bad_signature": "AUTH_BAD_SIGNATURE",
        "stale_timestamp": "AUTH_TIMESTAMP_SKEW",
        "unknown_channel": "AUTH_UNKNOWN_CHANNEL",
        "missing_headers": "AUTH_HEADERS_MISSING",
        "bad_nonce": "AUTH_NONCE_INVALID",
    }[case]
    if case == "bad_signature":
        headers["X-Signature"] = signed_headers(
            api.channel, "wrong", "POST", "/v1/drawdowns", data
        )["X-Signature"]
    elif case == "stale_timestamp":
        headers = _signed(api, data, now_s=int(time.time()) - 301)
    elif case == "unknown_channel":
        headers["X-Channel-Id"] = "nobody"
    elif case == "missing_headers":
        del headers["X-Signature"]
    else:
        headers["X-Nonce"] = "short"
    reply = await _raw_post(api, "/v1/drawdowns", data, headers)
    assert (reply.status, reply.json["code"]) == (401, expected), reply
    assert (await api.get(f"/v1/credit-lines/{line[1]}")).json["used"] == "0.00"


async def test_replayed_nonce_is_refused(api: ApiClient, line: tuple[str, str]) -> None:
    data = json.dumps(_drawdown(line[1], amount="0.00")).encode()
    headers = _signed(api, data)
    first = await _raw_post(api, "/v1/drawdowns", data, headers)
    assert first.json["code"] == "AMOUNT_NOT_POSITIVE"
    again = await _raw_post(api, "/v1/drawdowns", data, headers)
    assert (again.status, again.json["code"]) == (401, "AUTH_NONCE_REPLAYED")


BODY_CASES: list[tuple[str, Any, int, str]] = [
    ("malformed json", b"{not json", 400, "MALFORMED_JSON"),
    ("unknown field", {"surprise": 1}, 400, "UNKNOWN_FIELD"),
    ("three decimals", {"amount": "1.001"}, 400, "VALIDATION_FAILED"),
    ("negative amount", {"amount": "-5.00"}, 400, "VALIDATION_FAILED"),
    ("float amount", {"amount": 5000.0}, 400, "VALIDATION_FAILED"),
    ("zero amount", {"amount": "0.00"}, 400, "AMOUNT_NOT_POSITIVE"),
    ("unknown method", {"repayment_method": "balloon"}, 400, "VALIDATION_FAILED"),
    ("bad card", {"disburse_to": "6222021234567890123"}, 400, "BANK_CARD_CHECKSUM"),
    ("term outside product", {"term_months": 48}, 422, "TERM_NOT_ALLOWED"),
    ("bullet over 12 months", {"repayment_method": "bullet", "term_months": 18}, 422, "BULLET_TERM_TOO_LONG"),
    ("method not on line", {"repayment_method": "grace_then_equal_installment", "grace_months": 2}, 422,
     "METHOD_NOT_ALLOWED"),
    ("over the line", {"amount": "20000.01"}, 422, "CREDIT_LINE_EXCEEDED"),
    ("ID beyond 63 bits", {"credit_line_id": "9999999999999999999"}, 400, "VALIDATION_FAILED"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change", "status", "code"), BODY_CASES, ids=[c[0] for c in BODY_CASES]
)
async def test_bad_drawdown_bodies(
    api: ApiClient, line: tuple[str, str], name: str, change: Any, status: int, code: str
) -> None:
    raw = change if isinstance(change, bytes) else None
    reply = await api.post("/v1/drawdowns", _drawdown(line[1]) | ({} if raw else change), raw=raw)
    assert (reply.status, reply.json["code"]) == (status, code), reply
    assert reply.json["request_id"]
    assert (await api.get(f"/v1/credit-lines/{line[1]}")).json["used"] == "0.00"


async def test_missing_idempotency_key(api: ApiClient, line: tuple[str, str]) -> None:
    data = json.dumps(_drawdown(line[1])).encode()
    headers = _signed(api, data, idempotency_key=None) | {"Content-Type": "application/json"}
    async with api.session.post(api.base_url + "/v1/drawdowns", data=data, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json(content_type=None))["code"] == "IDEMPOTENCY_KEY_REQUIRED"


async def test_body_too_large(api: ApiClient) -> None:
    reply = await api.post("/v1/customers", raw=b'{"name": "' + b"x" * 70_000 + b'"}')
    assert (reply.status, reply.json["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_expired_line(api: ApiClient, settings: Settings) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    shard = settings.shard_map().physical_for(shard_of_id(int(line_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        await conn.execute(
            "UPDATE credit_line SET expires_on = current_date - 400 WHERE credit_line_id = $1",
            int(line_id),
        )
    finally:
        await conn.close()
    reply = await api.drawdown(line_id)
    assert (reply.status, reply.json["code"]) == (422, "CREDIT_LINE_EXPIRED")


async def test_other_tenant_sees_nothing(
    api: ApiClient, other_api: ApiClient, line: tuple[str, str]
) -> None:
    customer_id, line_id = line
    loan = (await api.drawdown(line_id, "100.00")).json
    for path in (
        f"/v1/loans/{loan['loan_id']}",
        f"/v1/loans/{loan['loan_id']}/schedule",
        f"/v1/credit-lines/{line_id}",
        f"/v1/customers/{customer_id}/loans",
    ):
        reply = await other_api.get(path)
        assert reply.status == 404, (path, reply)
    stolen = await other_api.post("/v1/drawdowns", _drawdown(line_id))
    assert (stolen.status, stolen.json["code"]) == (404, "CREDIT_LINE_NOT_FOUND")
    foreign = await other_api.post(
        "/v1/customers",
        {"tenant_id": "demo", "name": "x", "id_number": "11010519491231002X", "phone": "13800000000",
         "bank_card": new_bank_card()},
    )  # fmt: skip
    assert (foreign.status, foreign.json["code"]) == (403, "TENANT_FORBIDDEN")
    assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "100.00"


async def test_odd_digits_are_refused_not_crashed(api: ApiClient, line: tuple[str, str]) -> None:
    data = json.dumps(_drawdown(line[1])).encode()
    headers = _signed(api, data) | {"X-Timestamp": "²"}
    reply = await _raw_post(api, "/v1/drawdowns", data, headers)
    assert (reply.status, reply.json["code"]) == (401, "AUTH_TIMESTAMP_SKEW")
    long_stamp = _signed(api, data) | {"X-Timestamp": "9" * 5000}
    reply = await _raw_post(api, "/v1/drawdowns", data, long_stamp)
    assert reply.status in (400, 401, 431), reply  # refused, never a 500
    for odd in ("%C2%B2", "9999999999999999999"):
        got = await api.get(f"/v1/loans/{odd}")
        assert (got.status, got.json["code"]) == (404, "LOAN_NOT_FOUND"), got

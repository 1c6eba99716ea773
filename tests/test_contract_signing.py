"""Signing a contract (issue 16): a one-time code by SMS, kept only as a hash, checked at
signing and locked after too many wrong codes; the signer's IP and device in the
evidence; 面签 before online signing where the rule set asks for it; the contract read
back by the channel and by operators; the system's own time measured to the card."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.settings import Settings
from tests.api_client import ApiClient
from tests.conftest import EngineProcess, run_cli
from tests.origination_helpers import (
    OPERATOR,
    SIGNER,
    approved_after_review,
    approved_white_listed,
    issue_code,
    meet,
    metric,
    shard_conn,
    sign,
    signed,
    sms_text,
)

ATTEMPTS_MAX = 5  # origination.otp_attempts_max's default
READING_S = 3.0


async def test_code_by_sms_signs_and_only_its_hash_is_kept(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    settings: Settings,
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    contract_id = app["contract_id"]
    issued = await api.post(f"/v1/contracts/{contract_id}/otp")
    assert issued.status == 200, issued
    assert issued.json["attempts_left"] == ATTEMPTS_MAX
    assert "*" in issued.json["phone_masked"] and "otp" not in issued.json
    text = await sms_text(http, engine, issued.json["sms_reference"])
    # The message names the channel as the customer knows it, the contract and the time.
    assert "通过演示手机银行" in text and contract_id in text and "您于" in text
    code = text.split("验证码")[1][:6]
    conn = await shard_conn(settings, contract_id)
    try:
        row = await conn.fetchrow(
            "SELECT * FROM contract_otp WHERE contract_id = $1", int(contract_id)
        )
        outbox = await conn.fetch(
            "SELECT payload::text FROM outbox WHERE customer_id = $1", int(app["customer_id"])
        )
    finally:
        await conn.close()
    assert row is not None and row["code_hash"] is not None
    stored = b"".join(bytes(v) if isinstance(v, bytes) else str(v).encode() for v in row.values())
    assert code.encode() not in stored and hashlib.sha256(code.encode()).digest() not in stored
    assert not any(code in r["payload"] for r in outbox)  # never through the outbox either
    no_ip = await sign(api, contract_id, code, headers={"X-Signer-Device-Id": "dev-1"})
    assert (no_ip.status, no_ip.json["code"]) == (400, "SIGNER_IP_INVALID")
    no_device = await sign(api, contract_id, code, headers={"X-Signer-IP": "10.0.0.8"})
    assert (no_device.status, no_device.json["code"]) == (400, "SIGNER_DEVICE_ID_INVALID")
    done = await sign(api, contract_id, code)
    assert done.status == 200, done
    assert done.json["signature_evidence_seq"] > done.json["evidence_seq"]
    again = await api.post(f"/v1/contracts/{contract_id}/otp")
    assert (again.status, again.json["code"]) == (422, "CONTRACT_ALREADY_SIGNED")
    view = (await api.get(f"/v1/contracts/{contract_id}")).json
    [signature] = [e for e in view["evidence"] if e["kind"] == "signature"]
    assert signature["chain"]["evidence_seq"] == done.json["signature_evidence_seq"]
    for expected in (SIGNER["X-Signer-IP"], SIGNER["X-Signer-Device-Id"], "无需面签"):
        assert expected in signature["document"]


async def test_wrong_codes_lock_the_contract(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    contract_id = app["contract_id"]
    code = await issue_code(api, http, engine, contract_id)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in range(ATTEMPTS_MAX - 1, 0, -1):
        reply = await sign(api, contract_id, wrong)
        assert (reply.status, reply.json["code"]) == (422, "OTP_INVALID"), reply
        assert f"{left} attempts left" in reply.json["detail"]
    locked = await sign(api, contract_id, wrong)
    assert (locked.status, locked.json["code"]) == (429, "OTP_LOCKED"), locked
    assert int(locked.headers["Retry-After"]) > 60
    # Locked: the right code no longer signs, and no new code is sent.
    assert (await sign(api, contract_id, code)).json["code"] == "OTP_LOCKED"
    refused = await api.post(f"/v1/contracts/{contract_id}/otp")
    assert (refused.status, refused.json["code"]) == (429, "OTP_LOCKED")
    drawdown = await api.drawdown(app["credit_line_id"], "1000.00")
    assert drawdown.json["code"] == "CONTRACT_NOT_SIGNED"


async def test_codes_expire_wait_between_sends_and_must_be_asked_for(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    settings: Settings,
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    contract_id = app["contract_id"]
    never = await sign(api, contract_id, "123456")
    assert (never.status, never.json["code"]) == (422, "OTP_NOT_ISSUED")
    code = await issue_code(api, http, engine, contract_id)
    soon = await api.post(f"/v1/contracts/{contract_id}/otp")
    assert (soon.status, soon.json["code"]) == (429, "OTP_RESEND_TOO_SOON")
    assert 0 < int(soon.headers["Retry-After"]) <= 60
    conn = await shard_conn(settings, contract_id)
    try:  # five minutes pass
        await conn.execute(
            "UPDATE contract_otp SET expires_at = now() - interval '1 second' WHERE contract_id = $1",
            int(contract_id),
        )
    finally:
        await conn.close()
    expired = await sign(api, contract_id, code)
    assert (expired.status, expired.json["code"]) == (422, "OTP_EXPIRED")


async def test_sms_gateway_down_leaves_no_live_code(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    knobs = f"{engine.fakes.sms.base_url}/fake/knobs"
    async with http.post(knobs, json={"fail_ratio": 1}) as resp:
        assert resp.status == 200
    try:
        down = await api.post(f"/v1/contracts/{app['contract_id']}/otp")
        assert (down.status, down.json["code"]) == (503, "SMS_UNAVAILABLE"), down
    finally:
        async with http.post(knobs, json={"fail_ratio": 0}) as resp:
            assert resp.status == 200
    nothing = await sign(api, app["contract_id"], "123456")
    assert nothing.json["code"] == "OTP_NOT_ISSUED"
    # The failed send does not count against the wait between codes.
    await signed(api, http, engine, app["contract_id"])


async def test_face_to_face_before_online_signing(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    app = await approved_after_review(api)
    assert app["decision"]["face_to_face_required"] is True
    contract_id = app["contract_id"]
    first = await api.post(f"/v1/contracts/{contract_id}/otp")
    assert (first.status, first.json["code"]) == (422, "FACE_TO_FACE_REQUIRED")
    early = await sign(api, contract_id, "123456")
    assert early.json["code"] == "FACE_TO_FACE_REQUIRED"
    view = (await api.get(f"/v1/contracts/{contract_id}")).json
    assert view["status"] == "awaiting_face_to_face"
    assert view["face_to_face"]["reasons"] == ["FACE_TO_FACE_NOT_WHITELISTED"]
    by_channel = await api.post(
        f"/v1/contracts/{contract_id}/face-to-face",
        {"officer": "x", "place": "y", "met_at": dt.datetime.now(dt.UTC).isoformat()},
    )
    assert (by_channel.status, by_channel.json["code"]) == (401, "AUTH_OPERATOR_REQUIRED")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    too_late = await meet(api, contract_id, met_at=future.isoformat())
    assert (too_late.status, too_late.json["code"]) == (422, "FACE_TO_FACE_TIME_INVALID")
    met = await meet(api, contract_id)
    assert met.status == 200, met
    assert met.json["officer"] == "王信贷员 (A0173)" and met.json["evidence_seq"] >= 1
    twice = await meet(api, contract_id)
    assert (twice.status, twice.json["code"]) == (409, "FACE_TO_FACE_RECORDED")
    done = await signed(api, http, engine, contract_id)
    view = (await api.get(f"/v1/contracts/{contract_id}")).json
    assert view["status"] == "signed" and view["signed_at"] == done.json["signed_at"]
    kinds = [e["kind"] for e in view["evidence"]]
    assert kinds == ["credit_query_consent", "face_to_face", "signature"]
    assert "城关支行营业部" in view["evidence"][2]["document"]  # the signature cites the 面签
    steps = [
        s["step"]
        for s in (await api.get(f"/v1/applications/{app['application_id']}")).json["steps"]
    ]
    assert steps.index("face_to_face") < steps.index("contract_signed")


async def test_face_to_face_is_refused_where_not_required(
    api: ApiClient, engine: EngineProcess, tmp_path: Path
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    reply = await meet(api, app["contract_id"])
    assert (reply.status, reply.json["code"]) == (422, "FACE_TO_FACE_NOT_REQUIRED")


async def test_contract_read_back_by_channel_and_operator(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    other_channel: ApiClient,
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    contract_id = app["contract_id"]
    unsigned = (await api.get(f"/v1/contracts/{contract_id}")).json
    assert unsigned["status"] == "awaiting_signature" and unsigned["signed_at"] is None
    assert all(d["chain"] is None for d in unsigned["documents"])
    done = await signed(api, http, engine, contract_id)
    view = await api.get(f"/v1/contracts/{contract_id}")
    assert view.status == 200, view
    documents = {d["kind"]: d for d in view.json["documents"]}
    assert set(documents) == {"loan_contract", "credit_authorization"}
    for document in documents.values():
        digest = hashlib.sha256(document["text"].encode()).hexdigest()
        assert document["document_sha256"] == digest
        assert document["chain"]["entry_hash"] and len(document["chain"]["prev_hash"]) == 64
    loan = documents["loan_contract"]
    assert loan["document_sha256"] == done.json["document_sha256"]
    assert loan["chain"]["evidence_seq"] == done.json["evidence_seq"]
    assert contract_id in loan["text"] and app["credit_line_id"] == view.json["credit_line_id"]
    operator = await api.get(f"/v1/contracts/{contract_id}", headers=OPERATOR, sign=False)
    assert operator.status == 200 and operator.json == view.json
    stranger = await api.get(
        f"/v1/contracts/{contract_id}", headers={"X-Operator-Token": "guess"}, sign=False
    )
    assert (stranger.status, stranger.json["code"]) == (401, "AUTH_OPERATOR_UNKNOWN")
    elsewhere = await other_channel.get(f"/v1/contracts/{contract_id}")
    assert (elsewhere.status, elsewhere.json["code"]) == (404, "CONTRACT_NOT_FOUND")
    assert (await api.get("/v1/contracts/12345")).json["code"] == "CONTRACT_NOT_FOUND"


async def test_evidence_verify_catches_a_changed_evidence_record(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    settings: Settings,
) -> None:
    app = await approved_white_listed(api, engine, tmp_path)
    done = await signed(api, http, engine, app["contract_id"])
    seq = done.json["signature_evidence_seq"]
    conn = await shard_conn(settings, app["contract_id"])
    try:
        await conn.execute(
            "ALTER TABLE evidence_record DISABLE TRIGGER evidence_record_append_only"
        )
        try:
            await conn.execute(
                "UPDATE evidence_record SET document = replace(document, $2, '198.51.100.1') "
                "WHERE evidence_seq = $1",
                seq,
                SIGNER["X-Signer-IP"],
            )
            changed = run_cli("evidence", "verify", env=engine.env)
            assert changed.returncode == 1 and "signature record" in changed.stdout, changed
            await conn.execute(
                "UPDATE evidence_record SET document = replace(document, '198.51.100.1', $2) "
                "WHERE evidence_seq = $1",
                seq,
                SIGNER["X-Signer-IP"],
            )
        finally:
            await conn.execute(
                "ALTER TABLE evidence_record ENABLE TRIGGER evidence_record_append_only"
            )
    finally:
        await conn.close()
    assert run_cli("evidence", "verify", env=engine.env).returncode == 0


async def test_system_time_is_measured_apart_from_the_customers(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    relay = f"http://127.0.0.1:{engine.env['ENGINE_RELAY_METRICS_PORT']}/metrics"
    count_before = await metric(http, relay, "origination_system_seconds_count")
    journey_before = await metric(http, relay, "journey_seconds_sum")
    system_before = await metric(http, relay, "origination_system_seconds_sum")
    app = await approved_white_listed(api, engine, tmp_path)
    await asyncio.sleep(READING_S)  # the customer reads the contract: not the system's time
    await signed(api, http, engine, app["contract_id"])
    await api.disbursed_loan(app["credit_line_id"], "2000.00")
    deadline = time.monotonic() + 10
    while await metric(http, relay, "origination_system_seconds_count") == count_before:
        assert time.monotonic() < deadline, "origination_system_seconds not observed"
        await asyncio.sleep(0.1)
    assert await metric(http, relay, "origination_system_seconds_count") - count_before == 1
    system_s = await metric(http, relay, "origination_system_seconds_sum") - system_before
    journey_s = await metric(http, relay, "journey_seconds_sum") - journey_before
    assert system_s > 0 and journey_s - system_s >= READING_S, (system_s, journey_s)


@pytest.fixture(scope="module")
async def other_channel(
    engine: EngineProcess, http: aiohttp.ClientSession, control_conn: Any
) -> ApiClient:
    """A channel of another member bank."""
    from engine.security.pii import dev_cipher
    from engine.stores.control_admin import add_channel

    await control_conn.execute(
        "INSERT INTO tenant (tenant_id, name) VALUES ('other', 'Other bank') ON CONFLICT DO NOTHING"
    )
    if await control_conn.fetchval("SELECT 1 FROM channel WHERE channel_id = 'other-ch'") is None:
        await add_channel(control_conn, dev_cipher(), "other-ch", "other", "other-tenant-secret")
    await asyncio.sleep(0.6)  # the engine reloads reference data every 0.2 s in tests
    return ApiClient(http, engine.base_url, "other-ch", "other-tenant-secret")

"""Origination end to end against the fakes: white list to money on the card,
refusals with reasons, the review queue, bureau reuse and time-outs, and the
evidence chain catching a changed document or entry."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, new_id_number
from tests.conftest import EngineProcess, run_cli
from tests.origination_helpers import (
    OPERATOR,
    application,
    apply,
    born,
    bureau_queries,
    bureau_query_ids,
    sign,
    signed,
)


async def test_white_listed_customer_from_application_to_money(
    api: ApiClient, tmp_path: Path, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    id_number = born(1985)
    csv = tmp_path / "white.csv"
    csv.write_text(
        "tenant_id,id_number,limit,annual_rate_pct,repayment_methods,max_term_months\n"
        f"demo,{id_number},80000.00,5.40,equal_installment|equal_principal,24\n",
        "utf-8",
    )
    done = run_cli("whitelist", "import", str(csv), env=engine.env)
    assert done.returncode == 0, done.stderr
    body = application(id_number)
    card = body["applicant"]["bank_card"]  # registered with the customer: bound to them
    reply = await apply(api, body)
    assert reply.status == 201, reply
    app = reply.json
    assert app["status"] == "approved", app
    decision = app["decision"]
    # The personalized rate of the white list; the limit capped at what was asked for.
    assert (decision["limit"], decision["annual_rate_pct"]) == ("30000.00", "5.40")
    assert set(decision["repayment_methods"]) <= {"equal_installment", "equal_principal"}
    assert decision["rule_set_version"] in ("v1", "v2")
    assert app["decision"]["face_to_face_required"] is False
    line_id, contract_id = app["credit_line_id"], app["contract_id"]
    early = await api.drawdown(line_id, "10000.00", disburse_to=card)
    assert (early.status, early.json["code"]) == (422, "CONTRACT_NOT_SIGNED")
    done = await signed(api, http, engine, contract_id)
    assert len(done.json["document_sha256"]) == 64 and done.json["evidence_seq"] >= 1
    again = await sign(api, contract_id, "000000")
    assert again.json == done.json  # signing twice changes nothing
    await api.disbursed_loan(line_id, "10000.00", disburse_to=card)
    view = (await api.get(f"/v1/applications/{app['application_id']}")).json
    steps = [step["step"] for step in view["steps"]]
    assert steps[:2] == ["received", "identity_verified"]
    assert {"decided", "contract_signed", "disbursed"} <= set(steps)
    # The white list decided it: no report was needed, so the bureau was never asked.
    assert "bureau" not in steps and "consent_recorded" not in steps
    assert f"B{app['application_id']}" not in await bureau_query_ids(http, engine)


@pytest.mark.parametrize(
    ("marker", "reason"),
    [("逾期", "BUREAU_CURRENT_OVERDUE"), ("多头", "MULTI_LENDING"), ("多查", "BUREAU_QUERIES_3M")],
)
async def test_refused_with_reasons(api: ApiClient, marker: str, reason: str) -> None:
    body = application(born(1984))
    body["applicant"]["name"] = "钱" + marker  # the fake bureau's profile (its docstring)
    reply = await apply(api, body)
    assert reply.status == 201, reply
    assert reply.json["status"] == "refused"
    assert reason in reply.json["decision"]["reasons"]
    assert reply.json["credit_line_id"] is None
    steps = [step["step"] for step in reply.json["steps"]]
    assert steps.index("consent_recorded") < steps.index("bureau") < steps.index("decided")


async def test_fake_bureau_profiles_by_year_are_refused_by_age_without_a_query(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    reply = await apply(api, application(born(1950)))
    assert reply.json["status"] == "refused", reply
    assert reply.json["decision"]["reasons"] == ["AGE_OUT_OF_BAND"]
    assert f"B{reply.json['application_id']}" not in await bureau_query_ids(http, engine)


async def test_under_age_and_blacklisted_are_refused_not_queued(
    api: ApiClient, tmp_path: Path, engine: EngineProcess
) -> None:
    young = new_id_number(dt.date.today() - dt.timedelta(days=365 * 17))
    reply = await apply(api, application(young))
    assert (
        reply.json["status"] == "refused" and "AGE_OUT_OF_BAND" in reply.json["decision"]["reasons"]
    )
    listed = born(1980)
    csv = tmp_path / "black.csv"
    csv.write_text(f"tenant_id,id_number,reason\n*,{listed},fraud case 2026-17\n", "utf-8")
    assert run_cli("blacklist", "import", str(csv), env=engine.env).returncode == 0
    blocked = await apply(api, application(listed))
    assert (
        blocked.json["status"] == "refused" and "BLACKLISTED" in blocked.json["decision"]["reasons"]
    )
    queue = await api.get("/v1/review-queue", headers=OPERATOR, sign=False)
    queued = {a["application_id"] for a in queue.json["applications"]}
    assert (
        reply.json["application_id"] not in queued and blocked.json["application_id"] not in queued
    )


async def test_pre_approved_goes_to_review_then_operator_approves(api: ApiClient) -> None:
    reply = await apply(api, application(born(1990)))
    assert reply.json["status"] == "pending_review", reply
    application_id = reply.json["application_id"]
    refused = await api.get("/v1/review-queue", sign=False)
    assert (refused.status, refused.json["code"]) == (401, "AUTH_OPERATOR_REQUIRED")
    queue = await api.get("/v1/review-queue", headers=OPERATOR, sign=False)
    assert application_id in {a["application_id"] for a in queue.json["applications"]}
    approved = await api.post(
        f"/v1/applications/{application_id}/approve",
        {"reason": "met in person"},
        headers=OPERATOR,
        sign=False,
    )
    assert approved.status == 200, approved
    assert approved.json["status"] == "approved" and approved.json["contract_id"]
    twice = await api.post(
        f"/v1/applications/{application_id}/reject",
        {"reason": "changed mind"},
        headers=OPERATOR,
        sign=False,
    )
    assert (twice.status, twice.json["code"]) == (422, "NOT_IN_REVIEW")


async def test_bureau_report_reused_within_its_window(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    id_number = born(1991)
    before = len(await bureau_queries(http, engine))
    first = await apply(api, application(id_number))
    second = await apply(api, application(id_number))
    assert first.status == second.status == 201
    assert len(await bureau_queries(http, engine)) - before == 1


async def test_bureau_timeout_leaves_it_pending_then_decides(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    knobs = f"{engine.fakes.bureau.base_url}/fake/knobs"
    async with http.post(knobs, json={"timeout_ratio": 1.0, "timeout_hang_s": 5}) as resp:
        assert resp.status == 200
    body = application(born(1984))
    body["applicant"]["name"] = "钱逾期"
    try:
        reply = await api.post("/v1/applications", body)
        assert reply.json["status"] == "pending_bureau", reply
        assert reply.json["decision"] is None  # never a decision without the rules
    finally:
        async with http.post(knobs, json={"timeout_ratio": 0.0}) as resp:
            assert resp.status == 200
    application_id = reply.json["application_id"]
    deadline = time.monotonic() + 30
    while (view := (await api.get(f"/v1/applications/{application_id}")).json)[
        "status"
    ] == "pending_bureau":
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.3)
    assert view["status"] == "refused" and "BUREAU_CURRENT_OVERDUE" in view["decision"]["reasons"]


async def test_evidence_chain_detects_changed_document_and_entry(
    api: ApiClient,
    settings: Settings,
    engine: EngineProcess,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    id_number = born(1986)
    csv = tmp_path / "white.csv"
    csv.write_text(
        "tenant_id,id_number,limit,annual_rate_pct,repayment_methods,max_term_months\n"
        f"demo,{id_number},20000.00,6.00,equal_installment,12\n",
        "utf-8",
    )
    assert run_cli("whitelist", "import", str(csv), env=engine.env).returncode == 0
    app = (await apply(api, application(id_number))).json
    contract_id = int(app["contract_id"])
    await signed(api, http, engine, str(contract_id))
    assert run_cli("evidence", "verify", env=engine.env).returncode == 0
    shard = settings.shard_map().physical_for(shard_of_id(contract_id))
    conn = await asyncpg.connect(shard.dsn)
    try:
        original = await conn.fetchval(
            "SELECT document FROM contract WHERE contract_id = $1 AND kind = 'loan_contract'",
            contract_id,
        )
        await conn.execute(
            "UPDATE contract SET document = document || ' ' WHERE contract_id = $1 AND kind = 'loan_contract'",
            contract_id,
        )
        changed = run_cli("evidence", "verify", env=engine.env)
        assert changed.returncode == 1 and "document changed" in changed.stdout
        await conn.execute(
            "UPDATE contract SET document = $2 WHERE contract_id = $1 AND kind = 'loan_contract'",
            contract_id,
            original,
        )
        # A forged entry: only a superuser bypassing the append-only trigger can write one.
        seq = await conn.fetchval(
            "SELECT evidence_seq FROM contract WHERE contract_id = $1 AND kind = 'loan_contract'",
            contract_id,
        )
        await conn.execute("ALTER TABLE evidence_entry DISABLE TRIGGER evidence_append_only")
        try:
            saved = await conn.fetchval("SELECT signed_at FROM evidence_entry WHERE seq = $1", seq)
            await conn.execute(
                "UPDATE evidence_entry SET signed_at = signed_at - interval '1 day' WHERE seq = $1",
                seq,
            )
            forged = run_cli("evidence", "verify", env=engine.env)
            assert forged.returncode == 1, forged.stdout
            await conn.execute(
                "UPDATE evidence_entry SET signed_at = $2 WHERE seq = $1", seq, saved
            )
        finally:
            await conn.execute("ALTER TABLE evidence_entry ENABLE TRIGGER evidence_append_only")
    finally:
        await conn.close()
    assert run_cli("evidence", "verify", env=engine.env).returncode == 0


async def test_four_factor_mismatch_is_refused_and_verifier_down_is_503(
    api: ApiClient, engine: EngineProcess
) -> None:
    body = application(born(1988))
    body["applicant"]["phone"] = "13900000000"  # the fake verifier: not this person's phone
    reply = await apply(api, body)
    assert reply.status == 201, reply
    assert reply.json["status"] == "refused" and "ID_INVALID" in reply.json["decision"]["reasons"]
    assert "identity_verified" not in [step["step"] for step in reply.json["steps"]]
    engine.fakes.bureau.stop()
    try:
        down = await api.post("/v1/applications", application(born(1988)))
        assert (down.status, down.json["code"]) == (503, "IDENTITY_VERIFICATION_UNAVAILABLE")
        assert down.headers["Retry-After"]
    finally:
        engine.fakes.bureau.restart()
        engine.fakes.bureau.wait_ready()


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("0.00", "AMOUNT_NOT_POSITIVE"),  # the schema's form, refused by value
        ("00.50", "VALIDATION_FAILED"),  # a leading zero: not the schema's form
        ("12345678901234.00", "VALIDATION_FAILED"),  # 14 digits of yuan
        ("9999999999999.99", "AMOUNT_TOO_LARGE"),  # the form, beyond the engine's limit
    ],
)
async def test_bad_requested_amount_is_a_400_and_stores_nothing(
    api: ApiClient, settings: Settings, amount: str, code: str
) -> None:
    """Issue 21, item 6: these answered 500. Now a problem with a code, nothing stored."""
    body = application(born(1985), requested_amount=amount)
    reply = await api.post("/v1/applications", body)
    assert (reply.status, reply.json["code"]) == (400, code), reply
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM application WHERE channel_serial = $1",
                body["channel_serial"],
            )
        finally:
            await conn.close()
        assert found == 0


async def test_a_report_pulled_for_another_member_bank_is_not_reused(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """Issue 21, item 4: a report is kept per member bank. One pulled under bank A's
    consent (here: the demo bank's, then handed to bank A) is not reused in another
    bank's decision: that bank queries under its own applicant's consent."""
    from sharding.routing import logical_shard_for_id_number

    id_number = born(1991)
    before = len(await bureau_queries(http, engine))
    body = application(id_number)
    assert (await apply(api, body)).status == 201
    shard = settings.shard_map().physical_for(logical_shard_for_id_number(id_number))
    conn = await asyncpg.connect(shard.dsn)
    try:
        index = await conn.fetchval(
            "SELECT id_number_index FROM application WHERE channel_serial = $1",
            body["channel_serial"],
        )
        tenants = await conn.fetch(
            "SELECT tenant_id FROM bureau_report WHERE id_number_index = $1", index
        )
        assert [r["tenant_id"] for r in tenants] == ["demo"]
        await conn.execute(
            "UPDATE bureau_report SET tenant_id = 'bank-a' WHERE id_number_index = $1", index
        )
        again = await apply(api, application(id_number))
        assert again.status == 201
        assert len(await bureau_queries(http, engine)) - before == 2  # queried again
        tenants = await conn.fetch(
            "SELECT tenant_id FROM bureau_report WHERE id_number_index = $1 ORDER BY 1", index
        )
        assert [r["tenant_id"] for r in tenants] == ["bank-a", "demo"]
    finally:
        await conn.close()

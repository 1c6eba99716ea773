"""The bureau is asked only when the decision depends on the report, after the applicant's
authorization is evidenced, and each query is counted for the member bank that pays for
it; the ID card's validity makes ID_EXPIRED fire (issue 16)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.settings import Settings
from tests.api_client import ApiClient, new_id_number
from tests.conftest import EngineProcess, run_cli
from tests.origination_helpers import (
    application,
    apply,
    black_list,
    born,
    bureau_queries,
    bureau_query_ids,
    metric,
    shard_conn,
)

YESTERDAY = dt.date.today() - dt.timedelta(days=1)


def _with_applicant(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body["applicant"] |= fields
    return body


async def _hard_case(case: str, engine: EngineProcess, tmp_path: Path) -> dict[str, Any]:
    if case == "under_age":
        return application(new_id_number(dt.date.today() - dt.timedelta(days=365 * 17)))
    if case == "blacklisted":
        id_number = born(1980)
        black_list(engine, tmp_path, id_number)
        return application(id_number)
    if case == "identity_mismatch":  # the fake verifier: a phone ending 0000 is not theirs
        return _with_applicant(application(born(1982)), phone="13900000000")
    assert case == "id_expired"
    return _with_applicant(
        application(born(1981)), id_valid_from="2006-03-01", id_valid_until=str(YESTERDAY)
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("under_age", "AGE_OUT_OF_BAND"),
        ("blacklisted", "BLACKLISTED"),
        ("identity_mismatch", "ID_INVALID"),
        ("id_expired", "ID_EXPIRED"),
    ],
)
async def test_hard_refusals_never_query_the_bureau(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    case: str,
    reason: str,
) -> None:
    reply = await apply(api, await _hard_case(case, engine, tmp_path))
    assert reply.status == 201, reply
    assert reply.json["status"] == "refused" and reason in reply.json["decision"]["reasons"]
    steps = [step["step"] for step in reply.json["steps"]]
    assert "bureau" not in steps and "consent_recorded" not in steps, steps
    # The fake bureau records every query it receives: none for this application.
    assert f"B{reply.json['application_id']}" not in await bureau_query_ids(http, engine)


async def test_valid_and_long_term_ids_go_on_to_the_bureau(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    control_conn: asyncpg.Connection,
) -> None:
    # Valid through the business date (which a day-end may have moved past the wall date).
    today = await control_conn.fetchval("SELECT business_date FROM business_clock")
    for fields in (
        {"id_valid_from": "2020-01-01", "id_valid_until": str(today)},
        {"id_valid_from": "2010-01-01", "id_long_term": True},
    ):
        reply = await apply(api, _with_applicant(application(born(1970)), **fields))
        assert reply.json["status"] == "pending_review", (fields, reply)
        assert "ID_EXPIRED" not in reply.json["decision"]["reasons"]
        assert f"B{reply.json['application_id']}" in await bureau_query_ids(http, engine)


@pytest.mark.parametrize(
    "fields",
    [
        {"id_valid_until": "2030-01-01", "id_long_term": True},
        {"id_valid_from": str(dt.date.today() + dt.timedelta(days=3))},
        {"id_valid_from": "2020-05-01", "id_valid_until": "2020-04-30"},
    ],
)
async def test_impossible_id_validity_is_a_400_and_stores_nothing(
    api: ApiClient, fields: dict[str, Any]
) -> None:
    body = _with_applicant(application(born(1975)), **fields)
    reply = await api.post("/v1/applications", body)
    assert (reply.status, reply.json["code"]) == (400, "ID_VALIDITY_INVALID"), reply
    # Nothing was stored: the serial is still free for the corrected request.
    body["applicant"] = {k: v for k, v in body["applicant"].items() if not k.startswith("id_v")}
    body["applicant"].pop("id_long_term", None)
    again = await api.post("/v1/applications", body)
    assert again.status == 201, again


async def test_consent_is_evidenced_before_the_query(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
) -> None:
    shown = hashlib.sha256("我同意查询征信（渠道页面 v7）".encode()).hexdigest()
    consented_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=40)
    body = application(born(1976))
    body["consent"] |= {"text_sha256": shown, "consented_at": consented_at.isoformat()}
    reply = await apply(api, body)
    assert reply.json["status"] == "pending_review", reply
    application_id = reply.json["application_id"]
    steps = {s["step"]: dt.datetime.fromisoformat(s["at"]) for s in reply.json["steps"]}
    assert steps["consent_recorded"] <= steps["bureau"]
    conn = await shard_conn(settings, application_id)
    try:
        record = await conn.fetchrow(
            """SELECT r.*, e.signed_at FROM evidence_record r
               JOIN evidence_entry e ON e.seq = r.evidence_seq
               WHERE r.subject_id = $1 AND r.kind = 'credit_query_consent'""",
            int(application_id),
        )
    finally:
        await conn.close()
    assert record is not None
    document = record["document"]
    for expected in (application_id, "演示手机银行", "demo", "2026-01", shown, "贷款审批"):
        assert expected in document, expected
    assert body["applicant"]["id_number"] not in document  # masked
    assert hashlib.sha256(document.encode()).digest() == bytes(record["document_sha256"])
    [query] = [
        q for q in await bureau_queries(http, engine) if q["query_id"] == f"B{application_id}"
    ]
    assert record["signed_at"] <= dt.datetime.fromisoformat(query["received_at"])
    assert run_cli("evidence", "verify", env=engine.env).returncode == 0


async def test_a_consent_time_out_of_range_is_a_400(api: ApiClient) -> None:
    body = application(born(1977))
    body["consent"]["consented_at"] = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    reply = await api.post("/v1/applications", body)
    assert (reply.status, reply.json["code"]) == (400, "CONSENT_TIME_INVALID"), reply


async def test_queries_are_counted_per_member_bank_and_reports_not_shared(
    api: ApiClient,
    engine: EngineProcess,
    http: aiohttp.ClientSession,
    settings: Settings,
) -> None:
    url = f"{engine.ops_url}/metrics"  # the operations listener
    before = await metric(http, url, "bureau_queries_total", tenant="demo", outcome="ok")
    id_number = born(1979)
    first = await apply(api, application(id_number))
    application_id = int(first.json["application_id"])
    after = await metric(http, url, "bureau_queries_total", tenant="demo", outcome="ok")
    assert after - before == 1
    conn = await shard_conn(settings, application_id)
    try:
        row = await conn.fetchrow(
            "SELECT tenant_id, fetched_at FROM bureau_report WHERE application_id = $1",
            application_id,
        )
        assert row is not None and row["tenant_id"] == "demo"
        # The same report as if another member bank had queried it: not this bank's to reuse.
        await conn.execute(
            "UPDATE bureau_report SET tenant_id = 'other' WHERE application_id = $1",
            application_id,
        )
        second = await apply(api, application(id_number))
        assert f"B{second.json['application_id']}" in await bureau_query_ids(http, engine)
        third = await apply(api, application(id_number))
        # The bank's own report (the second query's) is reused within its window.
        assert f"B{third.json['application_id']}" not in await bureau_query_ids(http, engine)
    finally:
        await conn.close()

"""The fake credit bureau as a real subprocess, and the engine's adapter talking to it.

The fake is started with tests/fakes_support.py (a temporary record file, a
free port), so knobs set here never leak into another test. The adapter's
answers to what the fake cannot produce (garbage, oversized bodies, a 400) come
from a small in-process server. No database.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.adapters.bureau import BureauClient, BureauOutcome, parse_report
from tests import fakes_support
from tests.conftest import free_port
from tests.fakes_support import BUREAU, Fakes, call, metrics, records, set_knobs

fakes = fakes_support.fakes
client = fakes_support.client

AS_OF = dt.date(2026, 5, 20)
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# birth year -> (profile, accounts_total, overdue_accounts_24m, max_overdue_months_24m,
#                current_overdue_fen, lenders_6m, queries_3m)
PROFILES = {
    1988: ("clean", 3, 0, 0, 0, 0, 0),
    1950: ("current_overdue", 3, 2, 3, 865037, 0, 1),
    1951: ("multi_lending", 6, 0, 0, 0, 4, 2),
    1952: ("many_queries", 2, 0, 0, 0, 0, 8),
    1953: ("thin_file", 0, 0, 0, 0, 0, 0),
}


def id_number_born(year: int, sequence: str = "123") -> str:
    first17 = f"110105{year:04d}0612{sequence}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


def query(query_id: str, id_number: str, **extra: Any) -> dict[str, Any]:
    return {
        "query_id": query_id,
        "name": "张三",
        "id_number": id_number,
        "purpose": "loan_approval",
    } | extra


async def test_each_profile_is_reported_and_every_query_recorded(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    fake = await fakes.bureau()
    url = f"{fake.base_url}/bureau/v1/reports"
    for number, (year, expected) in enumerate(PROFILES.items()):
        body = query(f"q-{number}", id_number_born(year), as_of=AS_OF.isoformat())
        status, raw = await call(client, "POST", url, body)
        assert status == 200, raw
        got = parse_report(raw, AS_OF)
        assert (
            got.accounts_total,
            got.overdue_accounts_24m,
            got.max_overdue_months_24m,
            got.current_overdue_fen,
            got.lenders_6m,
            got.queries_3m,
        ) == expected[1:], expected[0]
        assert got.report_date == AS_OF and raw["header"]["query_id"] == f"q-{number}"
    # the same person again: the same report, under a new report id
    _, first = await call(
        client, "POST", url, query("q-a", id_number_born(1950), as_of="2026-05-20")
    )
    _, again = await call(
        client, "POST", url, query("q-b", id_number_born(1950), as_of="2026-05-20")
    )
    assert first["credit_accounts"] == again["credit_accounts"]
    assert first["header"]["report_id"] != again["header"]["report_id"]
    recorded = await records(client, fake)
    assert [r["query_id"] for r in recorded] == [*(f"q-{n}" for n in range(5)), "q-a", "q-b"]
    assert [r["profile"] for r in recorded[:5]] == [p[0] for p in PROFILES.values()]
    assert {r["outcome"] for r in recorded} == {"ok"}
    assert recorded[1]["id_number_masked"] == "110***********" + id_number_born(1950)[-4:]
    assert recorded[1]["name_masked"] == "张*"
    assert id_number_born(1950) not in fake.record_path.read_text()
    text = await metrics(client, fake)
    assert 'fake_bureau_queries_total{outcome="ok"} 7.0' in text
    assert 'fake_bureau_queries_total{outcome="failed"} 0.0' in text


async def test_the_adapter_reads_ok_and_unavailable(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    fake = await fakes.bureau(FAKE_BUREAU_TIMEOUT_HANG_S="2")
    adapter = BureauClient(client, fake.base_url, timeout_s=0.5)
    result = await adapter.report("a-1", "李四", id_number_born(1950))
    assert result.outcome is BureauOutcome.OK and result.raw is not None
    today = dt.datetime.now(SHANGHAI).date()
    assert parse_report(result.raw, today).current_overdue_fen == 865037
    await set_knobs(client, fake, fail_ratio=1)
    failed = await adapter.report("a-2", "李四", id_number_born(1988))
    assert (failed.outcome, failed.reason, failed.raw) == (
        BureauOutcome.UNAVAILABLE,
        "HTTP_503",
        None,
    )
    await set_knobs(client, fake, fail_ratio=0, timeout_ratio=1)
    started = time.monotonic()
    timed_out = await adapter.report("a-3", "李四", id_number_born(1988))
    assert timed_out.outcome is BureauOutcome.UNAVAILABLE and "Timeout" in str(timed_out.reason)
    assert time.monotonic() - started < 1.5
    recorded = await records(client, fake)
    assert [(r["query_id"], r["outcome"]) for r in recorded] == [
        ("a-1", "ok"),
        ("a-2", "failed"),
        ("a-3", "timeout"),
    ]
    nobody = BureauClient(client, f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    refused = await nobody.report("a-4", "李四", id_number_born(1988))
    assert refused.outcome is BureauOutcome.UNAVAILABLE and refused.reason is not None


async def _odd_bureau(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    kind = body["query_id"]
    if kind == "garbage":
        return web.Response(body=b"<html>busy</html>", content_type="text/html")
    if kind == "list":
        return web.json_response([1, 2])
    if kind == "huge":
        return web.json_response({"header": {}, "padding": "x" * (1024 * 1024 + 1)})
    if kind == "chunked":
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b" " * 65536)
        await response.write_eof()
        return response
    return web.json_response({"error": "invalid_field"}, status=400)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "UNREADABLE_REPORT"),
        ("list", "UNREADABLE_REPORT"),
        ("huge", "REPORT_TOO_LARGE"),
        ("chunked", "REPORT_TOO_LARGE"),
        ("refused", "HTTP_400"),
    ],
)
async def test_the_adapter_never_raises_on_odd_answers(
    client: aiohttp.ClientSession, kind: str, reason: str
) -> None:
    app = web.Application()
    app.router.add_post("/bureau/v1/reports", _odd_bureau)
    async with TestServer(app, host="127.0.0.1") as server:
        adapter = BureauClient(client, str(server.make_url("/")), timeout_s=2)
        result = await adapter.report(kind, "王五", id_number_born(1988))
    assert (result.outcome, result.reason) == (BureauOutcome.UNAVAILABLE, reason)


async def test_bad_queries_are_400_and_not_recorded(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    fake = await fakes.bureau()
    url = f"{fake.base_url}/bureau/v1/reports"
    good = id_number_born(1988)
    wrong_check = good[:17] + ("0" if good[17] != "0" else "1")
    for body in (
        query("b-1", wrong_check),
        query("b-1", good[:17]),
        query("b-1", good.lower().replace("x", "y")[:17] + "Y"),
        query("b-1", good, purpose="marketing"),
        query("b-1", good, extra=1),
        query("b-1", good, name=""),
        query("", good),
        query("b/1", good),
        query("b-1", good, as_of="2026-13-01"),
        {"query_id": "b-1", "name": "张三", "id_number": good},
    ):
        status, error = await call(client, "POST", url, body)
        assert status == 400 and isinstance(error["error"], str), (body, error)
    status, error = await call(client, "POST", url, query("b-1", wrong_check))
    assert error["error"] == "invalid_id_number"
    assert await records(client, fake) == []
    text = await metrics(client, fake)
    assert 'fake_bureau_queries_total{outcome="bad_request"} 11.0' in text


async def test_knobs_restart_and_a_bad_environment(
    fakes: Fakes, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "bureau" / "queries.jsonl"
    fake = await fakes.bureau(path)
    for core_only in ({"inquiry_fail_ratio": 1}, {"batch_timeout_mode": "whole"}):
        status, error = await set_knobs(client, fake, **core_only)
        assert (status, error["error"]) == (400, "invalid_knobs"), core_only
    status, knobs = await set_knobs(client, fake, latency_ms=200)
    assert status == 200 and knobs["latency_ms"] == 200 and knobs["timeout_hang_s"] == 30.0
    started = time.monotonic()
    url = f"{fake.base_url}/bureau/v1/reports"
    assert (await call(client, "POST", url, query("k-1", id_number_born(1990))))[0] == 200
    assert time.monotonic() - started >= 0.2
    before = await records(client, fake)
    await fake.stop()
    fake = await fakes.bureau(path)
    assert await records(client, fake) == before
    assert (await call(client, "GET", f"{fake.base_url}/fake/knobs"))[1]["latency_ms"] == 1

    bad = fakes.new(BUREAU, FAKE_BUREAU_FAIL_RATIO="0.7", FAKE_BUREAU_TIMEOUT_RATIO="0.7")
    returncode, stderr = await bad.run_until_exit()
    assert returncode == 2 and b"fail_ratio + timeout_ratio" in stderr


@pytest.mark.parametrize(
    ("name", "year", "profile"),
    [
        ("钱逾期", 1984, "current_overdue"),
        ("钱多头", 1984, "multi_lending"),
        ("钱多查", 1984, "many_queries"),
        ("钱白户", 1984, "thin_file"),
        ("钱七", 1984, "clean"),
        ("逾期钱", 1984, "clean"),  # a marker counts only at the end of the name
        ("钱白户", 1950, "current_overdue"),  # the birth year first, as before
    ],
)
def test_profile_by_birth_year_then_name_marker(name: str, year: int, profile: str) -> None:
    from loadtest.fakes.credit_bureau import profile_for

    assert profile_for(id_number_born(year), name) == profile

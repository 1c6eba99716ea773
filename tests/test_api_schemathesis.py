"""Bad input at scale (issue 17, item 6): schemathesis generates requests from the
engine's own `/openapi.json` — valid and invalid bodies, paths, queries and headers for
every route — and each is sent signed (through ApiClient, which signs as a channel does;
the operator routes get the operator token). No answer may be a 5xx, and every error is
an RFC 9457 problem document with a code and the request id. Then a fuzz of the
signature and idempotency headers alone: always a clean 400/401, never a 5xx.

Against an engine of its own on databases of its own (tests/battery.World): generated
customers and lines stay out of the suite's shared books.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import schemathesis
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from engine.http.openapi import build_openapi
from engine.settings import Settings
from tests.api_client import ApiClient, Reply
from tests.battery import World, pii_problems, running, scaled

SCHEMA = schemathesis.openapi.from_dict(json.loads(build_openapi()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CASES_PER_OPERATION_AND_MODE = scaled(6, 50)  # 24 routes x 2 modes: 288, or 2,400
AUTH = frozenset({"x-channel-id", "x-timestamp", "x-nonce", "x-signature"})
OPERATOR = {"X-Operator-Token": "demo-operator"}
SENT: list[int] = []


@pytest.fixture(scope="module")
async def world(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with running(
        World(settings, tmp_path_factory.mktemp("schemathesis"), proxied=False, workers=1)
    ) as started:
        yield started


def _problems_of(reply: Reply) -> list[str]:
    if reply.status >= 500:
        return [f"{reply.status}: {reply.raw[:300]!r}"]
    if reply.status < 400:
        return []
    kind = reply.headers.get("Content-Type", "")
    if not kind.startswith("application/problem+json"):
        return [f"{reply.status} as {kind!r}"]
    body = reply.json
    if not (isinstance(body, dict) and body.get("code") and body.get("request_id")):
        return [f"{reply.status} without code or request_id: {reply.raw[:200]!r}"]
    return []


async def _send(api: ApiClient, case: Any, operator: bool) -> Reply | None:
    path = case.formatted_path
    if case.query:
        path += "?" + urllib.parse.urlencode(case.query, doseq=True)
    headers = {k: str(v) for k, v in (case.headers or {}).items() if k.lower() not in AUTH}
    key = headers.pop("Idempotency-Key", None)
    if case.body is schemathesis.core.NOT_SET:
        raw = b""
    elif isinstance(case.body, bytes):  # a negative case's body that is not JSON at all
        raw = case.body
    else:
        raw = json.dumps(case.body).encode()
    try:
        return await api.request(case.method.upper(), path, raw=raw, key=key,
                                 headers=headers | (OPERATOR if operator else {}),
                                 sign=not operator)  # fmt: skip
    except (ValueError, aiohttp.ClientError, UnicodeEncodeError):
        return None  # the client itself refused to send it (a header it cannot encode)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])  # fmt: skip
@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{o.method} {o.path}" for o in OPERATIONS])
def test_generated_requests_get_no_5xx(world: World, operation: Any, mode: GenerationMode) -> None:
    operator = "operatorToken" in json.dumps(operation.definition.raw.get("security", []))
    loop = uvloop.new_event_loop()  # hypothesis calls the test body synchronously
    session = loop.run_until_complete(_session())
    api = ApiClient(session, world.engine.base_url if world.engine else "")
    found: list[str] = []

    @settings(max_examples=CASES_PER_OPERATION_AND_MODE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        reply = loop.run_until_complete(_send(api, case, operator))
        if reply is not None:
            SENT.append(reply.status)
            found.extend(f"{case.method} {case.formatted_path}: {p}" for p in _problems_of(reply))

    try:
        check()
    finally:
        loop.run_until_complete(session.close())
        loop.close()
    assert found == []


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("é²٣\t"),
    max_size=80,
)


@pytest.mark.parametrize("header", ["X-Channel-Id", "X-Timestamp", "X-Nonce", "X-Signature",
                                    "Idempotency-Key"])  # fmt: skip
async def test_fuzzed_auth_and_idempotency_headers_are_refused_cleanly(
    world: World, http: aiohttp.ClientSession, header: str
) -> None:
    """One header replaced by arbitrary text on an otherwise valid drawdown: a clean 4xx
    problem (or, for a key that happens to be valid, the normal answer), never a 5xx."""
    api = world.api(http)
    [borrower] = await world.borrowers(api, 1)
    body = {"credit_line_id": borrower.line_id, "amount": "1.00", "term_months": 3,
            "repayment_method": "equal_installment", "disburse_to": borrower.card}  # fmt: skip
    found: list[str] = []

    @settings(max_examples=scaled(25, 200), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(value=_HEADER_TEXT)
    def fuzz(value: str) -> None:
        values.append(value)

    values: list[str] = []
    fuzz()
    for value in values:
        try:
            reply = await api.post("/v1/drawdowns", body, headers={header: value})
        except (ValueError, aiohttp.ClientError):
            continue
        SENT.append(reply.status)
        found += [f"{header}={value!r}: {p}" for p in _problems_of(reply)]
        if header != "Idempotency-Key":
            assert reply.status in (400, 401), (value, reply)
    assert found == []
    await asyncio.sleep(0)


def test_the_battery_sent_enough_and_logged_no_personal_number(world: World) -> None:
    """Runs after the tests above (file order): the count the issue asks for, and the PII
    scan of this world's logs and bodies."""
    if CASES_PER_OPERATION_AND_MODE >= 50:
        assert len(SENT) >= 2000, len(SENT)
    assert len(SENT) > 100
    assert pii_problems(world.log_paths()) == []

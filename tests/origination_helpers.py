"""What origination tests share: applications, lists, the one-time code a customer
receives (read from the fake SMS gateway), signing, operators, metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, Reply, new_bank_card, new_id_number, new_phone
from tests.conftest import EngineProcess, run_cli

OPERATOR = {"X-Operator-Token": "demo-operator"}
SIGNER = {"X-Signer-IP": "203.0.113.7", "X-Signer-Device-Id": "android-14:9f3c2a"}
CODE_IN_SMS = re.compile(r"验证码([0-9]{6})")


def application(id_number: str, **fields: Any) -> dict[str, Any]:
    return {
        "tenant_id": "demo",
        "product_code": "demo-credit",
        "channel_serial": "WX" + secrets.token_hex(8),
        "applicant": {
            "name": "钱七",
            "id_number": id_number,
            "phone": new_phone(),
            "bank_card": new_bank_card(),
        },
        "requested_amount": "30000.00",
        "requested_term_months": 12,
        "repayment_method": "equal_installment",
        "consent": {"credit_report": True, "terms_version": "2026-01"},
    } | fields


def born(year: int) -> str:
    return new_id_number(dt.date(year, 1, 1) + dt.timedelta(days=secrets.randbelow(360)))


async def apply(api: ApiClient, body: dict[str, Any]) -> Reply:
    """POST an application and, if the bureau was slower than the inline wait (a loaded
    machine), poll it to its decision as a channel would."""
    reply = await api.post("/v1/applications", body)
    deadline = time.monotonic() + 30
    while (
        reply.status == 201
        and reply.json["status"] == "pending_bureau"
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.2)
        reply.json = (await api.get(f"/v1/applications/{reply.json['application_id']}")).json
    if reply.status == 201:
        remember_card(api, reply.json, body)
    return reply


def remember_card(api: ApiClient, view: dict[str, Any], body: dict[str, Any]) -> None:
    """An approved applicant is a customer whose registered card (the application's) is
    bound to them: the client's drawdowns on the line pay it (issue 21's card binding)."""
    if view.get("customer_id") and view.get("credit_line_id"):
        api.cards[view["customer_id"]] = body["applicant"]["bank_card"]
        api.line_customers[view["credit_line_id"]] = view["customer_id"]


def import_list(engine: EngineProcess, path: Path, kind: str, text: str) -> str:
    path.write_text(text, "utf-8")
    done = run_cli(kind, "import", str(path), env=engine.env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def white_list(engine: EngineProcess, tmp_path: Path, id_number: str) -> None:
    import_list(
        engine,
        tmp_path / f"white-{secrets.token_hex(4)}.csv",
        "whitelist",
        "tenant_id,id_number,limit,annual_rate_pct,repayment_methods,max_term_months\n"
        f"demo,{id_number},80000.00,5.40,equal_installment|equal_principal,24\n",
    )


def black_list(engine: EngineProcess, tmp_path: Path, id_number: str) -> None:
    import_list(
        engine,
        tmp_path / f"black-{secrets.token_hex(4)}.csv",
        "blacklist",
        f"tenant_id,id_number,reason\n*,{id_number},fraud case 2026-17\n",
    )


async def approved_white_listed(api: ApiClient, engine: EngineProcess, tmp_path: Path) -> Any:
    """A white-listed applicant, approved at once: no bureau, no 面签."""
    id_number = born(1985)
    white_list(engine, tmp_path, id_number)
    reply = await apply(api, application(id_number))
    assert reply.status == 201 and reply.json["status"] == "approved", reply
    return reply.json


async def approved_after_review(api: ApiClient) -> Any:
    """A clean applicant pre-approved into the queue, then approved by an operator."""
    body = application(born(1990))
    reply = await apply(api, body)
    assert reply.json["status"] == "pending_review", reply
    approved = await api.post(
        f"/v1/applications/{reply.json['application_id']}/approve",
        {"reason": "checked"},
        headers=OPERATOR,
        sign=False,
    )
    assert approved.status == 200 and approved.json["status"] == "approved", approved
    remember_card(api, approved.json, body)
    return approved.json


async def meet(api: ApiClient, contract_id: str, **fields: Any) -> Reply:
    """An operator records the 面签."""
    body = {
        "officer": "王信贷员 (A0173)",
        "place": "城关支行营业部",
        "met_at": dt.datetime.now(dt.UTC).isoformat(),
    } | fields
    return await api.post(
        f"/v1/contracts/{contract_id}/face-to-face", body, headers=OPERATOR, sign=False
    )


async def sms_text(http: aiohttp.ClientSession, engine: EngineProcess, reference: str) -> str:
    url = f"{engine.fakes.sms.base_url}/fake/messages?reference={reference}"
    async with http.get(url) as resp:
        found: list[dict[str, Any]] = await resp.json()
    assert len(found) == 1, (reference, found)
    return str(found[0]["text"])


async def issue_code(
    api: ApiClient, http: aiohttp.ClientSession, engine: EngineProcess, contract_id: str
) -> str:
    """Ask for a code and read it from the customer's SMS, as the customer would."""
    issued = await api.post(f"/v1/contracts/{contract_id}/otp")
    assert issued.status == 200, issued
    match = CODE_IN_SMS.search(await sms_text(http, engine, issued.json["sms_reference"]))
    assert match is not None
    return match.group(1)


async def sign(
    api: ApiClient, contract_id: str, code: str, headers: dict[str, str] | None = None
) -> Reply:
    return await api.post(
        f"/v1/contracts/{contract_id}/sign",
        {"confirmed": True, "otp": code},
        headers=SIGNER if headers is None else headers,
    )


async def signed(
    api: ApiClient, http: aiohttp.ClientSession, engine: EngineProcess, contract_id: str
) -> Reply:
    reply = await sign(api, contract_id, await issue_code(api, http, engine, contract_id))
    assert reply.status == 200, reply
    return reply


async def bureau_query_ids(http: aiohttp.ClientSession, engine: EngineProcess) -> set[str]:
    async with http.get(f"{engine.fakes.bureau.base_url}/fake/queries") as resp:
        return {q["query_id"] for q in await resp.json()}


async def bureau_queries(http: aiohttp.ClientSession, engine: EngineProcess) -> list[Any]:
    async with http.get(f"{engine.fakes.bureau.base_url}/fake/queries") as resp:
        result: list[Any] = await resp.json()
        return result


async def shard_conn(settings: Settings, some_id: str | int) -> asyncpg.Connection:
    """A connection to the shard database holding `some_id` (close it)."""
    shard = settings.shard_map().physical_for(shard_of_id(int(some_id)))
    return await asyncpg.connect(shard.dsn)


async def metric(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, over the prefork workers."""
    async with http.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total

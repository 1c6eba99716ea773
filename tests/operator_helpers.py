"""What the operator tests share: operators made through the admin API (the dev token is
the union's admin in tests), logging in, the member bank `bank-b` beside `demo`."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from tests.api_client import ApiClient, Reply

DEV = {"X-Operator-Token": "demo-operator"}
PASSWORD = "correct-horse-battery-9"
BANK_B = "bank-b"


async def ensure_bank_b(control_conn: asyncpg.Connection) -> None:
    await control_conn.execute(
        "INSERT INTO tenant (tenant_id, name) VALUES ($1, 'Member bank B') ON CONFLICT DO NOTHING",
        BANK_B,
    )


async def make_operator(api: ApiClient, tenant: str, *roles: str) -> dict[str, Any]:
    login = f"t-{'-'.join(r[:4] for r in roles)}-{secrets.token_hex(4)}".replace("_", "")
    reply = await api.post(
        "/v1/admin/operators",
        {"tenant_id": tenant, "login": login, "password": PASSWORD, "roles": list(roles)},
        headers=DEV,
        sign=False,
    )
    assert reply.status == 201, reply
    return dict(reply.json)


async def log_in(api: ApiClient, login: str, password: str = PASSWORD) -> Reply:
    return await api.post("/v1/operator/login", {"login": login, "password": password}, sign=False)


async def token_of(api: ApiClient, operator: dict[str, Any]) -> dict[str, str]:
    reply = await log_in(api, operator["login"])
    assert reply.status == 200, reply
    return {"X-Operator-Token": reply.json["token"]}


async def as_role(api: ApiClient, tenant: str, *roles: str) -> dict[str, str]:
    return await token_of(api, await make_operator(api, tenant, *roles))


async def audit_rows(control_conn: asyncpg.Connection, since_seq: int, **where: str) -> list[Any]:
    clauses = " ".join(f"AND {column} = ${n}" for n, column in enumerate(where, start=2))
    return list(
        await control_conn.fetch(
            f"SELECT * FROM audit_log WHERE seq > $1 {clauses} ORDER BY seq",
            since_seq,
            *where.values(),
        )
    )


async def audit_head(control_conn: asyncpg.Connection) -> int:
    return int(await control_conn.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log"))

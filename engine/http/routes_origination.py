"""Origination endpoints: applications (channels), the review queue and its decisions
(operators, `X-Operator-Token`). Contracts: `routes_contracts`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import NotFound, Unprocessable
from engine.contract.messages import (
    ApplicationCreate,
    ApplicationView,
    ReviewAction,
    ReviewQueue,
)
from engine.http import keys as app_keys
from engine.http.auth import BODY, CHANNEL, caller_of
from engine.http.operator_auth import AUDIT_CHANGE, AuditChange, operator_of
from engine.idempotency.once import run_once
from engine.origination import service as origination
from engine.origination.bureau_step import run_bureau_step
from engine.services.context import Services, parse_id
from engine.stores import outbox
from engine.stores.shards import acquire, in_transaction, read, shard_connection
from sharding.ids import shard_of_id

REVIEW_PAGE_MAX = 100


def _svc(request: web.Request) -> Services:
    return request.app[app_keys.SERVICES]


async def create_application(request: web.Request) -> web.Response:
    svc, channel = _svc(request), request[CHANNEL]
    ctx = request.app[app_keys.ORIGINATION]
    body = decode(request[BODY], ApplicationCreate)
    checked = await origination.check_request(
        svc, ctx, request.app[app_keys.VERIFIER], channel, body
    )
    created: list[ApplicationView] = []

    async def work(conn: asyncpg.Connection) -> tuple[ApplicationView, int]:
        view, key = await origination.submit(svc, ctx, conn, channel, checked)
        created.append(view)
        return view, key

    async def bureau_inline() -> bytes | None:
        view = created[0]
        if view.status != "pending_bureau":
            return encode(view)
        application_id = int(view.application_id)
        logical = shard_of_id(application_id)
        async with shard_connection(svc.pools, logical) as conn:
            claimed = await outbox.claim_one(conn, application_id, "bureau", 30.0)
        if claimed is not None:
            shard = svc.pools.physical_for(logical).name
            await run_bureau_step(svc, ctx, request.app[app_keys.BUREAU], shard, claimed)
        final = await read(
            svc.pools,
            logical,
            lambda c: origination.application_view(c, channel.tenant_id, application_id),
        )
        return None if final.status == "pending_bureau" else encode(final)

    return await run_once(
        caller_of(request),
        svc,
        checked.logical_shard,
        work,
        after=bureau_inline,
        pending_states=frozenset({"received", "pending_bureau"}),
    )


async def get_application(request: web.Request) -> web.Response:
    svc, channel = _svc(request), request[CHANNEL]
    application_id = parse_id(request.match_info["application_id"], "application")
    view = await read(
        svc.pools,
        shard_of_id(application_id),
        lambda c: origination.application_view(c, channel.tenant_id, application_id),
    )
    return json_response(encode(view))


async def review_queue(request: web.Request) -> web.Response:
    svc, scope = _svc(request), operator_of(request).scope

    async def pending(shard: str) -> list[asyncpg.Record]:
        async with acquire(svc.pools.pool(shard)) as conn:
            return list(
                await conn.fetch(
                    """SELECT * FROM application WHERE status = 'pending_review'
                         AND ($2::text IS NULL OR tenant_id = $2)
                       ORDER BY created_at LIMIT $1""",
                    REVIEW_PAGE_MAX,
                    scope,
                )
            )

    pages = await asyncio.gather(*(pending(name) for name in svc.pools.by_name))
    rows = sorted((row for page in pages for row in page), key=lambda r: r["created_at"])[
        :REVIEW_PAGE_MAX
    ]
    return json_response(encode(ReviewQueue([origination.view_of(row) for row in rows])))


async def manual_review(request: web.Request) -> web.Response:
    """The applicant asks for a person to review an automatic refusal (the channel)."""
    svc, channel = _svc(request), request[CHANNEL]
    ctx = request.app[app_keys.ORIGINATION]
    application_id = parse_id(request.match_info["application_id"], "application")
    view = await in_transaction(
        svc.pools,
        shard_of_id(application_id),
        lambda c: origination.request_manual_review(svc, ctx, c, channel.tenant_id, application_id),
    )
    return json_response(encode(view))


def _review(approve: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        svc, who = _svc(request), operator_of(request)
        application_id = parse_id(request.match_info["application_id"], "application")
        action = decode(request[BODY], ReviewAction)

        async def work(conn: asyncpg.Connection) -> ApplicationView:
            row = await conn.fetchrow(
                "SELECT * FROM application WHERE application_id = $1 FOR UPDATE", application_id
            )
            if row is None or not who.sees(row["tenant_id"]):  # another bank's: not found
                raise NotFound("APPLICATION_NOT_FOUND", f"no application {application_id}")
            if row["status"] != "pending_review":
                raise Unprocessable("NOT_IN_REVIEW", f"the application is {row['status']}")
            if approve:
                await origination.approve_reviewed(svc, conn, row)
            else:
                await conn.execute(
                    """UPDATE application SET status = 'refused', reasons = reasons || $2::text[],
                           updated_at = now() WHERE application_id = $1""",
                    application_id,
                    ["OPERATOR_REJECTED", action.reason[:64]],
                )
            await conn.execute(
                """UPDATE application SET steps = steps || $2::jsonb WHERE application_id = $1""",
                application_id,
                json.dumps([{"step": "reviewed", "at": origination.now_iso()}]),
            )
            return await origination.application_view(conn, row["tenant_id"], application_id)

        view = await in_transaction(svc.pools, shard_of_id(application_id), work)
        request[AUDIT_CHANGE] = AuditChange(
            f"application:{application_id}",
            before={"status": "pending_review"},
            after={"status": view.status, "reason": action.reason[:200]},
        )
        return json_response(encode(view))

    return handler


def setup_origination_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/v1/applications", create_application)
    add("GET", "/v1/applications/{application_id}", get_application)
    add("POST", "/v1/applications/{application_id}/manual-review", manual_review)
    add("GET", "/v1/review-queue", review_queue)
    add("POST", "/v1/applications/{application_id}/approve", _review(approve=True))
    add("POST", "/v1/applications/{application_id}/reject", _review(approve=False))

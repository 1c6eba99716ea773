"""Post-loan endpoints for operators (`X-Operator-Token`): the collection queue the
day-end fills, reassigning a case, and lifting a line freeze a rule or an operator set."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import BadRequest
from engine.contract.messages import (
    CollectionCaseView,
    CollectionQueue,
    CreditLineView,
    Reassign,
    StatusChange,
)
from engine.eod import collection
from engine.http import keys as app_keys
from engine.http.admin_context import acting_operator
from engine.http.auth import BODY
from engine.services import credit_lines
from engine.services.context import Services, parse_id
from engine.stores.reference import Channel
from engine.stores.shards import acquire, in_transaction
from sharding.ids import shard_of_id

QUEUE_PAGE_MAX = 200


def _svc(request: web.Request) -> Services:
    return request.app[app_keys.SERVICES]


async def collection_queue(request: web.Request) -> web.Response:
    svc = _svc(request)
    officer = request.query.get("officer") or None
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError as exc:
        raise BadRequest("LIMIT_INVALID", "limit must be a whole number 1..200") from exc
    if not 1 <= limit <= QUEUE_PAGE_MAX:
        raise BadRequest("LIMIT_INVALID", "limit must be a whole number 1..200")

    scope = acting_operator(request).scope  # a member bank's operator: its own cases

    async def of_shard(name: str) -> list[CollectionCaseView]:
        async with acquire(svc.pools.pool(name)) as conn:
            return await collection.open_cases_of(conn, officer, limit, scope)

    pages = await asyncio.gather(*(of_shard(name) for name in svc.pools.by_name))
    cases = sorted(
        (case for page in pages for case in page),
        key=lambda c: (-c.days_past_due, c.loan_id),
    )[:limit]
    return json_response(encode(CollectionQueue(cases)))


async def reassign_case(request: web.Request) -> web.Response:
    svc = _svc(request)
    loan_id = parse_id(request.match_info["loan_id"], "loan")
    body = decode(request[BODY], Reassign)
    scope = acting_operator(request).scope
    view = await in_transaction(
        svc.pools,
        shard_of_id(loan_id),
        lambda c: collection.reassign(c, svc.reference.data, loan_id, body.officer_id, scope),
    )
    return json_response(encode(view))


def _line_status(status: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        svc = _svc(request)
        line_id = parse_id(request.match_info["line_id"], "credit_line")
        body = decode(request[BODY], StatusChange)
        scope = acting_operator(request).scope

        async def work(conn: asyncpg.Connection) -> CreditLineView:
            tenant = await conn.fetchval(
                "SELECT tenant_id FROM credit_line WHERE credit_line_id = $1", line_id
            )
            if scope is not None and tenant != scope:  # another bank's line: not found
                tenant = None
            as_tenant = Channel("operator", tenant or "", "", True)
            return await credit_lines.set_line_status(
                conn, as_tenant, line_id, status, body.reason, by="operator"
            )

        view = await in_transaction(svc.pools, shard_of_id(line_id), work)
        return json_response(encode(view))

    return handler


def setup_post_loan_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("GET", "/v1/collection-queue", collection_queue)
    add("POST", "/v1/collection-cases/{loan_id}/reassign", reassign_case)
    add("POST", "/v1/operator/credit-lines/{line_id}/freeze", _line_status("frozen"))
    add("POST", "/v1/operator/credit-lines/{line_id}/unfreeze", _line_status("active"))

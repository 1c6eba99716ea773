"""`GET /v1/reports/{daily-flow|outstanding-by-product|asset-quality}?date=D[&tenant=T]
[&format=csv]` (operators): a member bank's figures, or the union's (its banks summed),
as JSON or CSV (`format=csv` or `Accept: text/csv`), computed from the ledger
(engine.reports.ledger_reports).

Scope from `acting_operator` only: a member bank's operator gets its own bank (another
bank named answers 404 TENANT_NOT_FOUND); the union's gets the union, or one bank with
`tenant=`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.contract.codec import encode, json_response
from engine.contract.errors import ApiError, BadRequest, NotFound
from engine.http import keys as app_keys
from engine.http.admin_context import acting_operator, audit_change
from engine.reports import ledger_reports as reports
from engine.reports.ledger_reports import Report
from engine.stores.shards import acquire


def report_scope(request: web.Request) -> list[str] | None:
    """The member banks in the report: None for the union's whole book."""
    acting = acting_operator(request)
    asked = request.query.get("tenant") or None
    reference = request.app[app_keys.REFERENCE].data
    if asked is None or (acting.union and asked == acting.tenant_id):
        return None if acting.union else [acting.tenant_id]
    tenant = reference.tenant_info.get(asked)
    if tenant is None or tenant.is_union or (not acting.union and asked != acting.tenant_id):
        raise NotFound("TENANT_NOT_FOUND", f"no member bank {asked[:32]!r}")
    return [asked]


def _date(request: web.Request) -> dt.date:
    text = request.query.get("date")
    if not text:
        return request.app[app_keys.SERVICES].business_date
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest("DATE_INVALID", "date must be a date YYYY-MM-DD") from exc


def wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format", "")
    if fmt not in ("", "json", "csv"):
        raise BadRequest("FORMAT_INVALID", "format must be json or csv")
    return fmt == "csv" or (not fmt and "text/csv" in request.headers.get("Accept", ""))


def _answer(request: web.Request, report: Report) -> web.Response:
    if wants_csv(request):
        name = f"{report.report}-{report.scope.replace(',', '_')}-{report.date}.csv"
        return web.Response(
            text=reports.to_csv(report),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return json_response(encode(report))


async def last_day_end(request: web.Request, on: dt.date) -> dt.date | None:
    async with acquire(request.app[app_keys.CONTROL_POOL]) as conn:
        day: dt.date | None = await conn.fetchval(
            """SELECT max(business_date) FROM eod_day
               WHERE finished_at IS NOT NULL AND business_date <= $1""",
            on,
        )
    return day


def _report(
    make: Callable[[web.Request, list[str] | None, dt.date], Awaitable[Report]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        try:
            scope, on = report_scope(request), _date(request)
            wants_csv(request)  # a bad format is refused before any work
        except ApiError as exc:  # another bank's report, say: refused, and recorded
            await audit_change(request, "report.read", request.path_qs, None, None,
                               f"refused:{exc.code}")  # fmt: skip
            raise
        return _answer(request, await make(request, scope, on))

    return handler


async def _flow(request: web.Request, scope: list[str] | None, on: dt.date) -> Report:
    return await reports.daily_flow(request.app[app_keys.SHARD_POOLS], scope, on)


async def _outstanding(request: web.Request, scope: list[str] | None, on: dt.date) -> Report:
    svc = request.app[app_keys.SERVICES]
    return await reports.outstanding_by_product(svc.pools, scope, on, svc.business_date)


async def _quality(request: web.Request, scope: list[str] | None, on: dt.date) -> Report:
    svc = request.app[app_keys.SERVICES]
    classified_on = await last_day_end(request, on)
    return await reports.asset_quality(svc.pools, scope, on, svc.business_date, classified_on)


def setup_report_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("GET", "/v1/reports/daily-flow", _report(_flow))
    add("GET", "/v1/reports/outstanding-by-product", _report(_outstanding))
    add("GET", "/v1/reports/asset-quality", _report(_quality))

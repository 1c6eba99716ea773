"""Operator routes of the tenant tree and two-level products (issue 19):

    /v1/admin/product-templates[/{template_code}]       the union's templates
    /v1/admin/products[/{product_code}[/pause|/resume|/versions]]   member banks' products
    /v1/admin/tenants[/{tenant_id}]                      the union and its member banks

The operator and its scope come from `acting_operator` only: a member bank's admin sees
and changes its own bank's products (another bank's answers 404, as if absent), reads
the union's templates and changes none (403 UNION_ONLY). Every change and every refusal
goes to `audit_change`. A change is written to the control database and this worker's
reference data reloaded at once; the others see it within `reference_refresh_s`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import ApiError, BadRequest, Forbidden, NotFound
from engine.contract.messages import (
    ProductAdopt,
    ProductList,
    ProductValues,
    StatusChange,
    TemplateBody,
    TemplateCreate,
    TemplateList,
    TenantChange,
    TenantCreate,
    TenantList,
)
from engine.http import keys as app_keys
from engine.http.admin_context import Acting, acting_operator, audit_change, audit_change_in
from engine.http.auth import BODY
from engine.stores import product_admin
from engine.stores.shards import acquire

Work = Callable[[asyncpg.Connection, Acting], Awaitable[tuple[Any, Any]]]


def _union_only(acting: Acting, what: str) -> None:
    if not acting.union:
        raise Forbidden("UNION_ONLY", f"only the union's operators may {what}")


async def _read(
    request: web.Request, work: Callable[[asyncpg.Connection, Acting], Awaitable[Any]]
) -> web.Response:
    """A read in the operator's scope; a refused one (another bank's: 404) is audited."""
    try:
        acting = acting_operator(request)
        async with acquire(request.app[app_keys.CONTROL_POOL]) as conn:
            view = await work(conn, acting)
    except ApiError as exc:
        await audit_change(request, "read", request.path, None, None, f"refused:{exc.code}")
        raise
    return json_response(encode(view))


async def _change(
    request: web.Request, action: str, target: str, work: Work, *, status: int = 200
) -> web.Response:
    """Run a change and its audit entry in one control transaction; a refusal is audited
    on its own."""
    try:
        acting = acting_operator(request)
        async with acquire(request.app[app_keys.CONTROL_POOL]) as conn, conn.transaction():
            try:
                before, after = await work(conn, acting)
            except asyncpg.DataError as exc:  # a reason holding a NUL, say: nothing written
                raise BadRequest("VALIDATION_FAILED", "text holds characters not allowed") from exc
            await audit_change_in(conn, request, action, target, before, after)
    except ApiError as exc:
        await audit_change(request, action, target, None, None, f"refused:{exc.code}")
        raise
    await request.app[app_keys.REFERENCE].load()
    return json_response(encode(after), status=status)


# ---- templates ---------------------------------------------------------------------------


async def list_templates(request: web.Request) -> web.Response:
    return await _read(request, lambda c, _: _templates(c))


async def _templates(conn: asyncpg.Connection) -> TemplateList:
    return TemplateList(await product_admin.list_templates(conn))


async def get_template(request: web.Request) -> web.Response:
    code = request.match_info["template_code"]
    return await _read(request, lambda c, _: product_admin.get_template(c, code))


async def create_template(request: web.Request) -> web.Response:
    async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
        _union_only(acting, "define product templates")
        body = decode(request[BODY], TemplateCreate)
        return None, await product_admin.create_template(conn, body)

    return await _change(request, "product_template.create", "template", work, status=201)


async def update_template(request: web.Request) -> web.Response:
    code = request.match_info["template_code"]

    async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
        _union_only(acting, "change product templates")
        body = decode(request[BODY], TemplateBody)
        return await product_admin.update_template(conn, code, body)

    return await _change(request, "product_template.update", f"template:{code}", work)


# ---- products ----------------------------------------------------------------------------


async def list_products(request: web.Request) -> web.Response:
    async def work(conn: asyncpg.Connection, acting: Acting) -> ProductList:
        return ProductList(await product_admin.list_products(conn, acting.scope))

    return await _read(request, work)


async def get_product(request: web.Request) -> web.Response:
    code = request.match_info["product_code"]

    async def work(conn: asyncpg.Connection, acting: Acting) -> Any:
        product, reason = await product_admin.get_product(conn, code, acting.scope)
        return product_admin.product_view(product, reason)

    return await _read(request, work)


async def product_versions(request: web.Request) -> web.Response:
    code = request.match_info["product_code"]
    return await _read(
        request, lambda c, acting: product_admin.product_versions(c, code, acting.scope)
    )


async def adopt_product(request: web.Request) -> web.Response:
    async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
        body = decode(request[BODY], ProductAdopt)
        tenant_id = body.tenant_id or ("" if acting.union else acting.tenant_id)
        if not acting.union and tenant_id != acting.tenant_id:
            raise NotFound("TENANT_NOT_FOUND", f"no member bank {tenant_id!r}")
        if not tenant_id:
            raise NotFound("TENANT_NOT_FOUND", "name the member bank adopting: tenant_id")
        return None, await product_admin.adopt(conn, body, tenant_id, acting.operator_id)

    return await _change(request, "product.adopt", "product", work, status=201)


async def update_product(request: web.Request) -> web.Response:
    code = request.match_info["product_code"]

    async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
        body = decode(request[BODY], ProductValues)
        return await product_admin.update_product(
            conn, code, body, acting.scope, acting.operator_id
        )

    return await _change(request, "product.update", f"product:{code}", work)


def _product_status(status: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        code = request.match_info["product_code"]

        async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
            body = decode(request[BODY], StatusChange)
            return await product_admin.set_product_status(
                conn, code, status, body.reason, scope=acting.scope, by=acting.operator_id
            )

        action = "product.pause" if status == "paused" else "product.resume"
        return await _change(request, action, f"product:{code}", work)

    return handler


# ---- tenants -----------------------------------------------------------------------------


async def list_tenants(request: web.Request) -> web.Response:
    async def work(conn: asyncpg.Connection, acting: Acting) -> TenantList:
        return TenantList(await product_admin.list_tenants(conn, acting.scope))

    return await _read(request, work)


def _own_tenant(acting: Acting, tenant_id: str) -> None:
    if not acting.union and tenant_id != acting.tenant_id:
        raise NotFound("TENANT_NOT_FOUND", f"no tenant {tenant_id!r}")


async def get_tenant(request: web.Request) -> web.Response:
    tenant_id = request.match_info["tenant_id"]

    async def work(conn: asyncpg.Connection, acting: Acting) -> Any:
        _own_tenant(acting, tenant_id)
        return await product_admin.tenant_view(conn, tenant_id)

    return await _read(request, work)


async def create_tenant(request: web.Request) -> web.Response:
    async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
        _union_only(acting, "create member banks")
        body = decode(request[BODY], TenantCreate)
        return None, await product_admin.create_member_bank(conn, body, acting.tenant_id)

    return await _change(request, "tenant.create", "tenant", work, status=201)


async def change_tenant(request: web.Request) -> web.Response:
    tenant_id = request.match_info["tenant_id"]

    async def work(conn: asyncpg.Connection, acting: Acting) -> tuple[Any, Any]:
        _own_tenant(acting, tenant_id)
        _union_only(acting, "change a member bank's name or registered regions")
        body = decode(request[BODY], TenantChange)
        return await product_admin.change_tenant(conn, tenant_id, body)

    return await _change(request, "tenant.update", f"tenant:{tenant_id}", work)


def setup_admin_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("GET", "/v1/admin/product-templates", list_templates)
    add("POST", "/v1/admin/product-templates", create_template)
    add("GET", "/v1/admin/product-templates/{template_code}", get_template)
    add("PUT", "/v1/admin/product-templates/{template_code}", update_template)
    add("GET", "/v1/admin/products", list_products)
    add("POST", "/v1/admin/products", adopt_product)
    add("GET", "/v1/admin/products/{product_code}", get_product)
    add("PATCH", "/v1/admin/products/{product_code}", update_product)
    add("POST", "/v1/admin/products/{product_code}/pause", _product_status("paused"))
    add("POST", "/v1/admin/products/{product_code}/resume", _product_status("active"))
    add("GET", "/v1/admin/products/{product_code}/versions", product_versions)
    add("GET", "/v1/admin/tenants", list_tenants)
    add("POST", "/v1/admin/tenants", create_tenant)
    add("GET", "/v1/admin/tenants/{tenant_id}", get_tenant)
    add("PATCH", "/v1/admin/tenants/{tenant_id}", change_tenant)

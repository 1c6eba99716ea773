"""Operators (the union's and member banks' staff) are not channels: they log in
(`POST /v1/operator/login`) and send the session token as `X-Operator-Token`.

One route table, `OPERATOR_ROUTES`, says for every operator route which permission it
needs (engine/operators/roles.py maps roles to permissions); the middleware enforces it
before the handler runs, and audits every operator request, refused ones included:

    no token ....................... 401 AUTH_OPERATOR_REQUIRED
    unknown / revoked / expired .... 401 AUTH_OPERATOR_UNKNOWN / _TOKEN_REVOKED / _TOKEN_EXPIRED
    disabled operator .............. 401 AUTH_OPERATOR_DISABLED
    role without the permission .... 403 OPERATOR_FORBIDDEN
    another tenant's object ........ 404 (the handler's; existence is not leaked)

Rows for routes the app does not serve are ignored, so the table may list routes other
modules add (products, tenants, reports). Handlers read the operator with `operator_of`.
A handler that audits its change inside its own control-database transaction marks the
request `AUDITED`; for a change in a shard the middleware appends the entry right after,
with what the handler put under `AUDIT_CHANGE`.

Dev and test only: the static token `demo-operator` (its SHA-256 in
`origination.operator_token_sha256`) stands for `DEV_PRINCIPAL`. Production accepts
session tokens only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any, NamedTuple

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from engine.contract.errors import ApiError, Forbidden, Unauthorized
from engine.http import keys as app_keys
from engine.operators import accounts, audit
from engine.operators.principal import Principal
from engine.stores.control_admin import DEMO_TENANT

log = logging.getLogger(__name__)

OPERATOR_TOKEN_HEADER = "X-Operator-Token"  # noqa: S105 - a header name
_ID = "[0-9]{1,19}"
_ANY = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class OperatorRoute(NamedTuple):
    methods: frozenset[str]
    path: re.Pattern[str]
    permission: str | None  # None: no login needed (the login itself); "": any operator
    action: str  # the audit entry's action


def _r(methods: str, path: str, permission: str | None, action: str) -> OperatorRoute:
    chosen = _ANY if methods == "*" else frozenset(methods.split("|"))
    return OperatorRoute(chosen, re.compile(f"^{path}$"), permission, action)


OPERATOR_ROUTES: tuple[OperatorRoute, ...] = (
    _r("POST", "/v1/operator/login", None, "operator.login"),
    _r("POST", "/v1/operator/logout", "", "operator.logout"),
    _r("GET", "/v1/operator/me", "", "operator.me"),
    _r("GET", "/v1/review-queue", "review.read", "review.read"),
    _r("POST", f"/v1/applications/{_ID}/approve", "review.decide", "application.approve"),
    _r("POST", f"/v1/applications/{_ID}/reject", "review.decide", "application.reject"),
    _r("POST", f"/v1/contracts/{_ID}/face-to-face", "face_to_face.record", "contract.face_to_face"),
    _r("GET", f"/v1/contracts/{_ID}", "contract.read", "contract.read"),  # with the token only
    _r("GET", "/v1/collection-queue", "collection.read", "collection.read"),
    _r("POST", f"/v1/collection-cases/{_ID}/reassign", "collection.reassign",
       "collection.reassign"),
    _r("POST", f"/v1/operator/credit-lines/{_ID}/freeze", "credit_line.freeze",
       "credit_line.freeze"),
    _r("POST", f"/v1/operator/credit-lines/{_ID}/unfreeze", "credit_line.freeze",
       "credit_line.unfreeze"),
    _r("GET|POST", "/v1/admin/operators", "operator.manage", "operator.manage"),
    _r("POST", "/v1/admin/operators/[^/]{1,64}/(roles|disable|enable|unlock|password)",
       "operator.manage", "operator.manage"),
    _r("POST", "/v1/admin/channels/[^/]{1,64}/rotate-secret", "channel.secret",
       "channel.rotate_secret"),
    _r("POST", "/v1/admin/rulesets", "ruleset.import", "ruleset.import"),
    _r("POST", "/v1/admin/whitelist", "whitelist.import", "whitelist.import"),
    _r("GET", "/v1/audit", "audit.read", "audit.read"),
    # Routes of the products, tenants and reports (issue 19, part B).
    # A member bank reads the union's templates to adopt one; only the union writes them.
    _r("GET", "/v1/admin/product-templates(/.*)?", "product.manage", "product_template"),
    _r("POST|PUT|PATCH|DELETE", "/v1/admin/product-templates(/.*)?", "product_template.manage",
       "product_template"),
    _r("*", "/v1/admin/products(/.*)?", "product.manage", "product"),
    _r("*", "/v1/admin/tenants(/.*)?", "tenant.manage", "tenant"),
    _r("GET", "/v1/reports(/.*)?", "report.read", "report.read"),
)  # fmt: skip
# Read by channels and operators alike: an operator's request is one with the token.
SHARED_READS = re.compile(rf"^/v1/contracts/{_ID}$")
# Every operator-only path (the OpenAPI test's view of the table).
OPERATOR_PATHS = re.compile(
    "|".join(
        f"(?:{row.path.pattern})"
        for row in OPERATOR_ROUTES
        if row.path.pattern != SHARED_READS.pattern
    )
)

DEV_PRINCIPAL = Principal(
    operator_id="dev-operator",
    tenant_id=DEMO_TENANT,
    roles=frozenset({"union_admin", "approver", "officer", "auditor"}),
    login="demo-operator",
)

PRINCIPAL = web.RequestKey("principal", Principal)
AUDITED = web.RequestKey("audited", bool)


class AuditChange(msgspec.Struct, frozen=True):
    target: str = ""
    before: Any = None
    after: Any = None


AUDIT_CHANGE = web.RequestKey("audit_change", AuditChange)


def operator_route(request: web.Request) -> OperatorRoute | None:
    """The table's row for this request, or None for a channel request."""
    path, method = request.path, request.method
    other_method: OperatorRoute | None = None
    for row in OPERATOR_ROUTES:
        if row.path.match(path) is None:
            continue
        if SHARED_READS.match(path) is not None and OPERATOR_TOKEN_HEADER not in request.headers:
            return None  # a channel's read of its contract
        if method in row.methods or (method == "HEAD" and "GET" in row.methods):
            return row
        # A path served for other methods (rows may split one path by method): the
        # router answers 405, to any operator.
        other_method = other_method or OperatorRoute(row.methods, row.path, "", row.action)
    return other_method


def is_operator_request(request: web.Request) -> bool:
    return operator_route(request) is not None


def operator_of(request: web.Request) -> Principal:
    """The authenticated operator of this request (the middleware set it)."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        raise Unauthorized("AUTH_OPERATOR_REQUIRED", "this endpoint is for operators")
    return principal


async def authenticate_operator(request: web.Request) -> Principal:
    token = request.headers.get(OPERATOR_TOKEN_HEADER, "")
    if not token:
        raise Unauthorized(
            "AUTH_OPERATOR_REQUIRED",
            "this endpoint is for operators: log in and send X-Operator-Token",
        )
    settings = request.app[app_keys.SETTINGS]
    if settings.env in ("dev", "test"):
        digest = hashlib.sha256(token.encode()).hexdigest()
        allowed = settings.origination.operator_token_sha256
        if any(hmac.compare_digest(digest, known) for known in allowed):
            return DEV_PRINCIPAL
    if len(token) > 128:
        raise Unauthorized("AUTH_OPERATOR_UNKNOWN", "unknown operator token")
    return await accounts.authenticate(request.app[app_keys.CONTROL_POOL], token)


def _target(request: web.Request) -> str:
    found = ",".join(f"{key}:{value}" for key, value in request.match_info.items())
    return found or request.path


async def _record(
    request: web.Request, route: OperatorRoute, who: Principal | None, code: str = ""
) -> None:
    change = request.get(AUDIT_CHANGE) or AuditChange()
    entry = audit.event(
        who,
        route.action,
        change.target or _target(request),
        before=change.before,
        after=change.after,
        code=code,
        request_id=request.get("request_id", ""),
    )
    await audit.append_alone(request.app[app_keys.CONTROL_POOL], entry)


async def handle_operator_request(
    request: web.Request, handler: Handler, route: OperatorRoute
) -> web.StreamResponse:
    who: Principal | None = None
    try:
        if route.permission is not None:
            who = await authenticate_operator(request)
            request[PRINCIPAL] = who
            request["tenant_id"] = who.tenant_id
            if route.permission and not who.can(route.permission):
                raise Forbidden(
                    "OPERATOR_FORBIDDEN",
                    f"this needs the permission {route.permission}, which your roles "
                    f"({', '.join(sorted(who.roles))}) do not give",
                )
        response = await handler(request)
    except ApiError as exc:
        if not request.get(AUDITED):
            await _record(request, route, who, exc.code)
        raise
    except web.HTTPException as exc:  # the router's 404/405: nothing ran
        if exc.status >= 400 and who is not None:
            await _record(request, route, who, f"HTTP_{exc.status}")
        raise
    if not request.get(AUDITED) and route.permission is not None:
        await _record(request, route, who)
    return response

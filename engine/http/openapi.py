"""The OpenAPI 3.1 document of the channel API, generated from the msgspec types.

Made once at start-up (`build_openapi`) and served as bytes at `/openapi.json` on the
operations listener (not the channel port).
Each route names its request and response Struct; the schemas come from
`msgspec.json.schema_components`, so the document cannot drift from the code.

Every route the engine serves under `/v1/` is here (tests/test_openapi_complete.py
compares the document with the router), each with its security scheme: the channel
signature (API.md's four headers) for channel routes, `X-Operator-Token` for the
operator routes (review queue, collection queue, the bank's freeze), which a channel
signature does not open.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from engine.contract import messages as t
from engine.contract.errors import Problem


class Route(NamedTuple):
    method: str
    path: str
    summary: str
    request: type | None
    status: int
    response: type
    operator: bool = False  # X-Operator-Token instead of the channel signature
    public: bool = False  # no credentials at all (the operators' login)


ROUTES: tuple[Route, ...] = (
    Route("post", "/v1/customers", "Register a customer", t.CustomerCreate, 201, t.CustomerView),
    Route("get", "/v1/customers/{customer_id}/loans", "A customer's loans", None, 200, t.LoanList),
    Route("post", "/v1/customers/{customer_id}/cards", "Bind a card (four-factor verified)",
          t.CardBind, 201, t.CardView),
    Route("get", "/v1/customers/{customer_id}/cards", "Cards bound to a customer", None, 200,
          t.CustomerCardsView),
    Route("post", "/v1/credit-lines", "Grant a line", t.CreditLineCreate, 201, t.CreditLineView),
    Route("get", "/v1/credit-lines/{line_id}", "Read a line", None, 200, t.CreditLineView),
    Route("post", "/v1/credit-lines/{line_id}/freeze", "Freeze a line", t.StatusChange, 200,
          t.CreditLineView),
    Route("post", "/v1/credit-lines/{line_id}/unfreeze", "Unfreeze a line", t.StatusChange, 200,
          t.CreditLineView),
    Route("post", "/v1/drawdowns", "Draw down a loan", t.DrawdownCreate, 201, t.DrawdownView),
    Route("get", "/v1/loans/{loan_id}", "Read a loan", None, 200, t.LoanView),
    Route("get", "/v1/loans/{loan_id}/schedule", "Installments", None, 200, t.ScheduleView),
    Route("get", "/v1/loans/{loan_id}/payoff-quote", "What settling costs on a date", None, 200,
          t.PayoffQuoteView),
    Route("post", "/v1/repayments", "Repay one or several loans", t.RepaymentCreate, 201,
          t.RepaymentView),
    Route("get", "/v1/repayments/{repayment_id}", "Read a repayment", None, 200, t.RepaymentView),
    Route("post", "/v1/applications", "Apply for a credit line", t.ApplicationCreate, 201,
          t.ApplicationView),
    Route("get", "/v1/applications/{application_id}", "Read an application", None, 200,
          t.ApplicationView),
    Route("post", "/v1/contracts/{contract_id}/otp", "Send the customer a signing code", None,
          200, t.OtpIssued),
    Route("post", "/v1/contracts/{contract_id}/sign", "Sign the contract", t.ContractSign, 200,
          t.ContractSigned),
    Route("get", "/v1/contracts/{contract_id}", "Read a contract and its evidence", None, 200,
          t.ContractView),
    Route("post", "/v1/contracts/{contract_id}/face-to-face", "Record the 面签",
          t.FaceToFaceCreate, 200, t.FaceToFaceView, operator=True),
    Route("get", "/v1/review-queue", "Applications awaiting review", None, 200, t.ReviewQueue,
          operator=True),
    Route("post", "/v1/applications/{application_id}/approve", "Approve after review",
          t.ReviewAction, 200, t.ApplicationView, operator=True),
    Route("post", "/v1/applications/{application_id}/reject", "Reject after review",
          t.ReviewAction, 200, t.ApplicationView, operator=True),
    Route("get", "/v1/collection-queue", "Open collection cases", None, 200, t.CollectionQueue,
          operator=True),
    Route("post", "/v1/collection-cases/{loan_id}/reassign", "Hand a case to another officer",
          t.Reassign, 200, t.CollectionCaseView, operator=True),
    Route("post", "/v1/operator/credit-lines/{line_id}/freeze", "The bank freezes a line",
          t.StatusChange, 200, t.CreditLineView, operator=True),
    Route("post", "/v1/operator/credit-lines/{line_id}/unfreeze", "The bank lifts its freeze",
          t.StatusChange, 200, t.CreditLineView, operator=True),
    Route("post", "/v1/operator/login", "Log in: a session token for X-Operator-Token",
          t.OperatorLogin, 200, t.OperatorSessionView, public=True),
    Route("post", "/v1/operator/logout", "End this session", None, 200, t.SessionEnded,
          operator=True),
    Route("get", "/v1/operator/me", "The operator of this token", None, 200, t.OperatorView,
          operator=True),
    Route("get", "/v1/admin/operators", "Operators (of your member bank)", None, 200,
          t.OperatorList, operator=True),
    Route("post", "/v1/admin/operators", "Create an operator with roles", t.OperatorCreate, 201,
          t.OperatorView, operator=True),
    Route("post", "/v1/admin/operators/{operator_id}/roles", "Change an operator's roles",
          t.OperatorRoles, 200, t.OperatorView, operator=True),
    Route("post", "/v1/admin/operators/{operator_id}/disable", "Disable an operator",
          t.StatusChange, 200, t.OperatorView, operator=True),
    Route("post", "/v1/admin/operators/{operator_id}/enable", "Enable an operator again",
          t.StatusChange, 200, t.OperatorView, operator=True),
    Route("post", "/v1/admin/operators/{operator_id}/unlock", "Lift a lockout", None, 200,
          t.OperatorView, operator=True),
    Route("post", "/v1/admin/operators/{operator_id}/password", "Reset a password (ends the "
          "operator's sessions)", t.OperatorPassword, 200, t.OperatorView, operator=True),
    Route("post", "/v1/admin/channels/{channel_id}/rotate-secret", "A new channel secret, "
          "shown once", None, 200, t.ChannelSecretView, operator=True),
    Route("post", "/v1/admin/rulesets", "Import a rule set (the body: its JSON file)", None, 200,
          t.RuleSetImported, operator=True),
    Route("post", "/v1/admin/whitelist", "Import a white list (the body: its CSV file)", None,
          200, t.WhitelistImported, operator=True),
    Route("get", "/v1/audit", "The audit trail (auditors)", None, 200, t.AuditPage,
          operator=True),
    Route("post", "/v1/applications/{application_id}/manual-review",
          "The applicant asks an officer to review an automatic refusal", None, 200,
          t.ApplicationView),
    # Issue 19: the union's templates, member banks' products, the tenant tree, reports.
    Route("get", "/v1/admin/product-templates", "The union's product templates", None, 200,
          t.TemplateList, operator=True),
    Route("post", "/v1/admin/product-templates", "Define a template (union)", t.TemplateCreate,
          201, t.TemplateView, operator=True),
    Route("get", "/v1/admin/product-templates/{template_code}", "One template", None, 200,
          t.TemplateView, operator=True),
    Route("put", "/v1/admin/product-templates/{template_code}", "Change a template (union)",
          t.TemplateBody, 200, t.TemplateView, operator=True),
    Route("get", "/v1/admin/products", "Products in the operator's scope", None, 200,
          t.ProductList, operator=True),
    Route("post", "/v1/admin/products", "A member bank adopts a template", t.ProductAdopt, 201,
          t.ProductView, operator=True),
    Route("get", "/v1/admin/products/{product_code}", "One product", None, 200, t.ProductView,
          operator=True),
    Route("patch", "/v1/admin/products/{product_code}", "Change a product's values (a version)",
          t.ProductValues, 200, t.ProductView, operator=True),
    Route("post", "/v1/admin/products/{product_code}/pause", "No new lines or drawdowns",
          t.StatusChange, 200, t.ProductView, operator=True),
    Route("post", "/v1/admin/products/{product_code}/resume", "Resume a paused product",
          t.StatusChange, 200, t.ProductView, operator=True),
    Route("get", "/v1/admin/products/{product_code}/versions", "Every version of a product",
          None, 200, t.ProductVersionList, operator=True),
    Route("get", "/v1/admin/tenants", "The union and its member banks in scope", None, 200,
          t.TenantList, operator=True),
    Route("post", "/v1/admin/tenants", "Create a member bank (union)", t.TenantCreate, 201,
          t.TenantView, operator=True),
    Route("get", "/v1/admin/tenants/{tenant_id}", "One tenant", None, 200, t.TenantView,
          operator=True),
    Route("patch", "/v1/admin/tenants/{tenant_id}", "Rename, or register regions (union)",
          t.TenantChange, 200, t.TenantView, operator=True),
    Route("get", "/v1/reports/daily-flow", "Daily business flow (JSON or CSV)", None, 200,
          t.DailyFlowReport, operator=True),
    Route("get", "/v1/reports/outstanding-by-product", "Outstanding principal by product",
          None, 200, t.OutstandingReport, operator=True),
    Route("get", "/v1/reports/asset-quality", "Five-category classes, overdue and NPL ratio",
          None, 200, t.AssetQualityReport, operator=True),
)  # fmt: skip
# Path parameters that are not 64-bit IDs.
# Path parameters that are not numeric ids (the rest: ^[1-9][0-9]{0,18}$).
_PATH_PATTERNS = {
    "operator_id": "^op_[0-9a-f]{16}$",
    "channel_id": "^[A-Za-z0-9_-]{1,64}$",
    "template_code": "^[a-z0-9][a-z0-9-]{0,47}$",
    "product_code": "^[a-z0-9][a-z0-9-]{0,47}$",
    "tenant_id": "^[a-z0-9][a-z0-9-]{0,31}$",
}
# The signer as the channel saw them, recorded in the signature's evidence.
_SIGNER_HEADERS = ("X-Signer-IP", "X-Signer-Device-Id")

_AUTH_HEADERS = ("X-Channel-Id", "X-Timestamp", "X-Nonce", "X-Signature")
SECURITY_SCHEMES: dict[str, Any] = {
    "channelSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "HMAC-SHA256 of the request with the channel's secret, with "
        "X-Channel-Id, X-Timestamp and X-Nonce; version 2 also signs X-Channel-Id and "
        "the Idempotency-Key (API.md, Authentication; README, Security)",
    },
    "operatorToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Operator-Token",
        "description": "an operator's session token from POST /v1/operator/login (30 min; "
        "README, Operators, roles and audit); channels cannot call these routes",
    },
}
_REPORT_QUERY: list[dict[str, Any]] = [
    {"name": "date", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "tenant", "in": "query",
     "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"}},
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}},
]  # fmt: skip
# Path parameters that are codes rather than 64-bit IDs.
# Query parameters of the routes that take any, as the handlers read them.
_QUERY: dict[str, list[dict[str, Any]]] = {
    "/v1/reports/daily-flow": _REPORT_QUERY,
    "/v1/reports/outstanding-by-product": _REPORT_QUERY,
    "/v1/reports/asset-quality": _REPORT_QUERY,
    "/v1/loans/{loan_id}/payoff-quote": [
        {"name": "on", "in": "query", "schema": {"type": "string", "format": "date"}}
    ],
    "/v1/collection-queue": [
        {"name": "officer", "in": "query",
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    ],
    "/v1/audit": [
        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "operator", "in": "query", "schema": {"type": "string", "maxLength": 64}},
        {"name": "action", "in": "query", "schema": {"type": "string", "maxLength": 64}},
        {"name": "after_seq", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    ],
}  # fmt: skip


def _ref(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$ref": schema["$ref"]}


def _operation(
    route: Route, response_ref: dict[str, Any], request_ref: dict[str, Any] | None
) -> dict[str, Any]:
    method, path, summary, _, status, _, operator, public = route
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in (() if operator or public else _AUTH_HEADERS)
    ]
    parameters += [
        {"name": part[1:-1], "in": "path", "required": True,
         "schema": {"type": "string",
                    "pattern": _PATH_PATTERNS.get(part[1:-1], "^[1-9][0-9]{0,18}$")}}
        for part in path.split("/") if part.startswith("{")
    ]  # fmt: skip
    if method == "post" and status == 201:
        parameters.append(
            {"name": "Idempotency-Key", "in": "header", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
        )  # fmt: skip
    parameters += _QUERY.get(path, [])
    if path.endswith("/sign"):
        parameters += [
            {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
            for name in _SIGNER_HEADERS
        ]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [] if public else [{"operatorToken" if operator else "channelSignature": []}],
        "parameters": parameters,
        "responses": {
            str(status): {
                "description": "success",
                "content": {"application/json": {"schema": response_ref}},
            },
            "default": {
                "description": "an RFC 9457 problem with a stable code",
                "content": problem,
            },
        },
    }
    if request_ref is not None:
        operation["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": request_ref}}
        }  # fmt: skip
    return operation


def build_openapi() -> bytes:
    types: list[Any] = [Problem]
    for route in ROUTES:
        types += [route.response] + ([route.request] if route.request is not None else [])
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    refs = iter(schemas[1:])
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        response_ref = _ref(next(refs))
        request_ref = _ref(next(refs)) if route.request is not None else None
        paths.setdefault(route.path, {})[route.method] = _operation(
            route, response_ref, request_ref
        )
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Online-lending transaction engine: channel API",
            "version": "1",
            "description": "See API.md: HMAC-signed requests, idempotent POSTs, amounts as "
            "decimal strings in yuan, IDs as strings of digits.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }
    return msgspec.json.encode(document)

"""Who is acting on an operator route, and the record of what they changed.

Every handler of `/v1/admin/...` and `/v1/reports/...` gets its operator and its tenant
scope from `acting_operator` only, and calls `audit_change` for every change and every
refusal. Both bodies here are the stand-ins of this branch: the operator is the dev
token's (a union-level operator), and `X-Acting-Tenant` — honoured only where
ENGINE_ENV is dev or test — lets tests act as a member bank's admin. The operators,
roles and audit trail replace them (issue 19, part A) without touching the handlers.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from engine.contract.errors import NotFound
from engine.http import keys as app_keys

log = logging.getLogger(__name__)

ACTING_TENANT_HEADER = "X-Acting-Tenant"
DEV_OPERATOR_ID = "demo-operator"


class Acting(msgspec.Struct, frozen=True):
    operator_id: str
    tenant_id: str
    union: bool  # a union-level operator: every member bank in scope

    @property
    def scope(self) -> str | None:
        """The one member bank this operator sees; None: the union's (all of them)."""
        return None if self.union else self.tenant_id


def acting_operator(request: web.Request) -> Acting:
    """The operator of an authenticated operator request (engine.http.operator_auth)."""
    reference = request.app[app_keys.REFERENCE].data
    union_id = reference.union_id() or "union"
    wanted = request.headers.get(ACTING_TENANT_HEADER)
    if wanted and request.app[app_keys.SETTINGS].env in ("dev", "test"):
        tenant = reference.tenant_info.get(wanted)
        if tenant is None:
            raise NotFound("TENANT_NOT_FOUND", f"no tenant {wanted[:32]!r}")
        return Acting(DEV_OPERATOR_ID, tenant.tenant_id, tenant.is_union)
    return Acting(DEV_OPERATOR_ID, union_id, True)


async def audit_change(  # noqa: PLR0917 - the contract with the audit trail (part A)
    request: web.Request,
    action: str,
    target: str,
    before: object,
    after: object,
    outcome: str,
) -> None:
    """Record an operator's change or refusal (a log line here; the audit trail's
    hash-chained entry once part A's is merged)."""
    try:
        acting = acting_operator(request)
    except NotFound:  # an unknown X-Acting-Tenant: refused, and recorded as such
        acting = Acting(DEV_OPERATOR_ID, request.headers.get(ACTING_TENANT_HEADER, "")[:32], False)
    log.info(
        "admin change",
        extra={
            "operator": acting.operator_id,
            "acting_tenant": acting.tenant_id,
            "action": action,
            "target": target,
            "outcome": outcome,
            "before": msgspec.json.encode(before).decode() if before is not None else "",
            "after": msgspec.json.encode(after).decode() if after is not None else "",
        },
    )

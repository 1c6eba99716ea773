"""Who is acting on an operator route of the tenant tree, products and reports, and the
audit entry of what they changed.

The operator is the authenticated `Principal` (engine.http.operator_auth, issue 19's
operators): a role that spans tenants (union_admin) acts for the union, every other for
its own member bank. Dev and test only: the static dev token's operator may name a member
bank in `X-Acting-Tenant` to act as that bank's admin (tests of the member banks' scope);
production ignores the header.

Every change is appended to the audit trail in the transaction that makes it
(`audit_change_in`); a refusal, in a transaction of its own (`audit_change`). Either
marks the request audited, so the operator middleware does not add a second entry.
"""

from __future__ import annotations

import asyncpg
import msgspec
from aiohttp import web

from engine.contract.errors import NotFound
from engine.http import keys as app_keys
from engine.http.operator_auth import (
    AUDITED,
    DEV_PRINCIPAL,
    PRINCIPAL,
    operator_of,
    operator_route,
)
from engine.operators import audit

ACTING_TENANT_HEADER = "X-Acting-Tenant"


class Acting(msgspec.Struct, frozen=True):
    operator_id: str
    tenant_id: str
    union: bool  # a union-level operator: every member bank in scope

    @property
    def scope(self) -> str | None:
        """The one member bank this operator sees; None: the union's (all of them)."""
        return None if self.union else self.tenant_id


def acting_operator(request: web.Request) -> Acting:
    """The operator of an authenticated operator request, as the admin routes see it."""
    who = operator_of(request)
    reference = request.app[app_keys.REFERENCE].data
    wanted = request.headers.get(ACTING_TENANT_HEADER)
    dev = request.app[app_keys.SETTINGS].env in ("dev", "test")
    if wanted and dev and who == DEV_PRINCIPAL:
        tenant = reference.tenant_info.get(wanted)
        if tenant is None:
            raise NotFound("TENANT_NOT_FOUND", f"no tenant {wanted[:32]!r}")
        return Acting(who.operator_id, tenant.tenant_id, tenant.is_union)
    if who.all_tenants:
        return Acting(who.operator_id, reference.union_id() or who.tenant_id, True)
    return Acting(who.operator_id, who.tenant_id, False)


def _event(  # noqa: PLR0917 - as audit_change's
    request: web.Request, action: str, target: str, before: object, after: object, outcome: str
) -> audit.AuditEvent:
    if "." not in action:  # "read": the route's own name first
        route = operator_route(request)
        action = f"{route.action if route else 'admin'}.{action}"
    code = outcome.removeprefix("refused:") if outcome.startswith("refused:") else ""
    return audit.event(
        request.get(PRINCIPAL),
        action,
        target,
        before=before,
        after=after,
        code=code,
        request_id=request.get("request_id", ""),
    )


async def audit_change_in(  # noqa: PLR0917 - the connection, then as audit_change's
    conn: asyncpg.Connection,
    request: web.Request,
    action: str,
    target: str,
    before: object,
    after: object,
) -> None:
    """The entry of a change, in the control transaction that makes it."""
    await audit.append(conn, _event(request, action, target, before, after, "done"))
    request[AUDITED] = True


async def audit_change(  # noqa: PLR0917 - who, what, on what, before, after, how it ended
    request: web.Request,
    action: str,
    target: str,
    before: object,
    after: object,
    outcome: str,
) -> None:
    """The entry of a refusal (`outcome` "refused:CODE") or of a change already
    committed, in a transaction of its own."""
    entry = _event(request, action, target, before, after, outcome)
    await audit.append_alone(request.app[app_keys.CONTROL_POOL], entry)
    request[AUDITED] = True

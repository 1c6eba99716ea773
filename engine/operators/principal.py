"""Who is asking: an authenticated operator, as the routes see them."""

from __future__ import annotations

import msgspec

from engine.operators.roles import CROSS_TENANT_ROLES, permissions_of


class Principal(msgspec.Struct, frozen=True):
    operator_id: str
    tenant_id: str
    roles: frozenset[str]
    login: str = ""
    session: bytes | None = None  # the session token's SHA-256 (None: the dev token, the CLI)

    def can(self, permission: str) -> bool:
        return permission in permissions_of(self.roles)

    @property
    def all_tenants(self) -> bool:
        return bool(self.roles & CROSS_TENANT_ROLES)

    def sees(self, tenant_id: str | None) -> bool:
        """May act on `tenant_id`'s data (a foreign one answers 404, never 403)."""
        return self.all_tenants or tenant_id == self.tenant_id

    @property
    def scope(self) -> str | None:
        """The tenant a query is limited to, or None for every tenant."""
        return None if self.all_tenants else self.tenant_id

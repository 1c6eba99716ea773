"""Roles and their permissions: the one table (README, "Operators, roles and audit",
prints the same table; tests/test_operators_rbac.py checks they agree).

Separation of duties: the admins manage people, products and credentials but do not
decide loans; only auditors read the audit log; approvers decide, officers work the
collection queue. `union_admin` acts on every tenant, every other role on its own.
"""

from __future__ import annotations

from typing import Final

PERMISSIONS: Final = (
    "review.read",
    "review.decide",
    "face_to_face.record",
    "contract.read",
    "collection.read",
    "collection.reassign",
    "credit_line.freeze",
    "ruleset.import",
    "whitelist.import",
    "channel.secret",
    "operator.manage",
    "audit.read",
    "product_template.manage",
    "product.manage",
    "tenant.manage",
    "report.read",
)

ROLE_PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "union_admin": frozenset(
        {
            "tenant.manage",
            "product_template.manage",
            "product.manage",
            "operator.manage",
            "channel.secret",
            "ruleset.import",
            "whitelist.import",
            "report.read",
        }
    ),
    "bank_admin": frozenset(
        {"product.manage", "operator.manage", "channel.secret", "whitelist.import", "report.read"}
    ),
    "approver": frozenset(
        {
            "review.read",
            "review.decide",
            "face_to_face.record",
            "contract.read",
            "credit_line.freeze",
        }
    ),
    "officer": frozenset(
        {
            "review.read",
            "collection.read",
            "collection.reassign",
            "face_to_face.record",
            "contract.read",
        }
    ),
    "auditor": frozenset({"audit.read", "report.read", "contract.read"}),
}
ROLES: Final = tuple(ROLE_PERMISSIONS)
# Roles acting on every tenant; the others act on their own tenant only.
CROSS_TENANT_ROLES: Final = frozenset({"union_admin"})
# Roles only a union_admin may grant (a bank_admin cannot make one).
UNION_ONLY_ROLES: Final = frozenset({"union_admin"})

assert all(p in PERMISSIONS for perms in ROLE_PERMISSIONS.values() for p in perms)


def permissions_of(roles: frozenset[str]) -> frozenset[str]:
    return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in roles))

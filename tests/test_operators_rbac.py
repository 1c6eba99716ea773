"""The permission matrix: every role against every operator route the engine serves,
allowed (anything but 401/403) or refused (403 OPERATOR_FORBIDDEN) exactly as the route
table and the role table say; and the README's table is the code's."""

from __future__ import annotations

import re

import asyncpg
import pytest

from engine.http.app import create_app
from engine.http.operator_auth import OPERATOR_ROUTES, SHARED_READS
from engine.operators.roles import PERMISSIONS, ROLE_PERMISSIONS, ROLES
from engine.settings import Settings
from tests.api_client import ApiClient
from tests.conftest import ROOT
from tests.operator_helpers import audit_head, audit_rows, make_operator, token_of

NO_OPERATOR = "op_0000000000000000"
# One concrete request per served operator route: harmless whoever is let through
# (unknown ids, bodies the handler refuses, an empty white list).
EXAMPLES: list[tuple[str, str, object]] = [
    ("GET", "/v1/operator/me", None),
    ("GET", "/v1/review-queue", None),
    ("POST", "/v1/applications/1/approve", {"reason": "matrix"}),
    ("POST", "/v1/applications/1/reject", {"reason": "matrix"}),
    ("POST", "/v1/contracts/1/face-to-face", {}),
    ("GET", "/v1/contracts/1", None),
    ("GET", "/v1/collection-queue", None),
    ("POST", "/v1/collection-cases/1/reassign", {"officer_id": "nobody"}),
    ("POST", "/v1/operator/credit-lines/1/freeze", {"reason": "matrix"}),
    ("POST", "/v1/operator/credit-lines/1/unfreeze", {"reason": "matrix"}),
    ("GET", "/v1/admin/operators", None),
    ("POST", "/v1/admin/operators", {}),
    ("POST", f"/v1/admin/operators/{NO_OPERATOR}/roles", {"roles": ["officer"]}),
    ("POST", f"/v1/admin/operators/{NO_OPERATOR}/disable", {"reason": "matrix"}),
    ("POST", f"/v1/admin/operators/{NO_OPERATOR}/enable", {"reason": "matrix"}),
    ("POST", f"/v1/admin/operators/{NO_OPERATOR}/unlock", None),
    ("POST", f"/v1/admin/operators/{NO_OPERATOR}/password", {"password": "x" * 16}),
    ("POST", "/v1/admin/channels/no-such-channel/rotate-secret", None),
    ("POST", "/v1/admin/rulesets", {}),
    ("POST", "/v1/admin/whitelist", None),
    ("GET", "/v1/audit", None),
    # The tenant tree, two-level products and reports: unknown codes, bodies refused.
    ("GET", "/v1/admin/product-templates", None),
    ("POST", "/v1/admin/product-templates", {}),
    ("GET", "/v1/admin/product-templates/1", None),
    ("PUT", "/v1/admin/product-templates/1", {}),
    ("GET", "/v1/admin/products", None),
    ("POST", "/v1/admin/products", {}),
    ("GET", "/v1/admin/products/1", None),
    ("PATCH", "/v1/admin/products/1", {}),
    ("POST", "/v1/admin/products/1/pause", {"reason": "matrix"}),
    ("POST", "/v1/admin/products/1/resume", {"reason": "matrix"}),
    ("GET", "/v1/admin/products/1/versions", None),
    ("GET", "/v1/admin/tenants", None),
    ("POST", "/v1/admin/tenants", {}),
    ("GET", "/v1/admin/tenants/1", None),
    ("PATCH", "/v1/admin/tenants/1", {}),
    ("GET", "/v1/reports/daily-flow", None),
    ("GET", "/v1/reports/outstanding-by-product", None),
    ("GET", "/v1/reports/asset-quality", None),
]
# Not in the matrix: login needs no token, logout ends the session (test_operators.py).
UNGATED = {("POST", "/v1/operator/login"), ("POST", "/v1/operator/logout")}


def _row(method: str, path: str) -> tuple[str, str]:
    for row in OPERATOR_ROUTES:
        if method in row.methods and row.path.match(path):
            assert row.permission is not None
            return row.permission, row.path.pattern
    raise AssertionError(f"{method} {path} is not in the route table")


def test_every_served_operator_route_has_an_example(settings: Settings) -> None:
    app = create_app(settings)
    served = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or not canonical.startswith("/v1/"):
            continue
        concrete = re.sub(r"\{(operator_id)\}", NO_OPERATOR, canonical)
        concrete = re.sub(r"\{channel_id\}", "no-such-channel", concrete)
        concrete = re.sub(r"\{[a-z_]+\}", "1", concrete)
        rows = [r for r in OPERATOR_ROUTES if r.path.match(concrete)]
        if rows and (route.method, concrete) not in UNGATED:
            served.add((route.method, concrete))
    # GET /v1/contracts/1 is an operator route only with the token: counted by its row.
    assert served == {(m, p) for m, p, _ in EXAMPLES}
    assert SHARED_READS.match("/v1/contracts/1")


@pytest.mark.parametrize("role", ROLES)
async def test_permission_matrix(
    api: ApiClient, control_conn: asyncpg.Connection, role: str
) -> None:
    operator = await make_operator(api, "demo", role)
    headers = await token_of(api, operator)
    since = await audit_head(control_conn)
    refused_count = 0
    for method, path, body in EXAMPLES:
        permission, _ = _row(method, path)
        reply = await api.request(method, path, body, headers=headers, sign=False)
        allowed = permission == "" or permission in ROLE_PERMISSIONS[role]
        if allowed:
            assert reply.status not in (401, 403), (role, method, path, reply)
        else:
            refused_count += 1
            assert (reply.status, reply.json["code"]) == (403, "OPERATOR_FORBIDDEN"), (
                role, method, path, reply,
            )  # fmt: skip
    # Every refusal is in the audit trail, with the code.
    refusals = await audit_rows(
        control_conn, since, operator_id=operator["operator_id"], code="OPERATOR_FORBIDDEN"
    )
    assert len(refusals) == refused_count
    assert all(r["outcome"] == "refused" for r in refusals)


def test_separation_of_duties() -> None:
    decide = {r for r, perms in ROLE_PERMISSIONS.items() if "review.decide" in perms}
    assert decide == {"approver"}
    assert {r for r, perms in ROLE_PERMISSIONS.items() if "audit.read" in perms} == {"auditor"}
    assert set().union(*ROLE_PERMISSIONS.values()) == set(PERMISSIONS)


def test_readme_table_is_the_code() -> None:
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("<!-- permission-table -->")[1].split("<!-- /permission-table -->")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip(" `") for cell in lines[0].strip("|").split("|")]
    assert header[1:] == list(ROLES)
    table: dict[str, set[str]] = {role: set() for role in ROLES}
    permissions = []
    for line in lines[2:]:
        cells = [cell.strip(" `") for cell in line.strip("|").split("|")]
        permissions.append(cells[0])
        for role, cell in zip(ROLES, cells[1:], strict=True):
            assert cell in ("✓", ""), line
            if cell == "✓":
                table[role].add(cells[0])
    assert permissions == list(PERMISSIONS)
    assert table == {role: set(perms) for role, perms in ROLE_PERMISSIONS.items()}

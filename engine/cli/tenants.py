"""`python -m engine tenants ...`: the union and its member banks (issue 19).

    tenants list
    tenants add ID --name N [--regions 4201,420102]   a member bank under the union
    tenants regions ID --regions 4201,420102          its registered regions (2, 4 or 6
                                                      leading digits of area codes)

A member bank's channel: `channels add ID --tenant T --name N`; its first admin:
`operators create ...` (the operators' commands).
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.admin_common import print_change


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("tenants", help="the union and its member banks")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every tenant")
    add = actions.add_parser("add", help="a member bank under the union")
    add.add_argument("tenant_id")
    add.add_argument("--name", required=True)
    add.add_argument("--regions", default="", help="comma-separated region codes")
    regions = actions.add_parser("regions", help="set a member bank's registered regions")
    regions.add_argument("tenant_id")
    regions.add_argument("--regions", required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import msgspec

    from engine.contract import messages as m
    from engine.contract.errors import BadRequest
    from engine.stores import product_admin as pa

    def codes(text: str) -> list[str]:
        return [c.strip() for c in text.split(",") if c.strip()]

    async def act(conn: Any) -> Any:
        if args.action == "list":
            return m.TenantList(await pa.list_tenants(conn, None))
        try:
            if args.action == "add":
                body = msgspec.convert(
                    {"tenant_id": args.tenant_id, "name": args.name,
                     "region_codes": codes(args.regions)},
                    m.TenantCreate,
                )  # fmt: skip
            else:
                change = msgspec.convert({"region_codes": codes(args.regions)}, m.TenantChange)
        except msgspec.ValidationError as exc:
            raise BadRequest("TENANT_INVALID", str(exc)) from exc
        if args.action == "add":
            union = await conn.fetchval("SELECT tenant_id FROM tenant WHERE kind = 'union'")
            return await pa.create_member_bank(conn, body, union)
        return (await pa.change_tenant(conn, args.tenant_id, change))[1]

    return print_change("tenants", act)

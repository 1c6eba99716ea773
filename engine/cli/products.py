"""`python -m engine products ...`: the union's templates and the member banks' products
(issue 19), as the union's operator on this machine. Bodies are JSON files of the same
shape as the admin API's (`/v1/admin/product-templates`, `/v1/admin/products`).

    products templates                          every template
    products template-add FILE.json             a template (TemplateCreate)
    products template-update CODE FILE.json     its next version (TemplateBody)
    products list [--tenant T]                  products, of one member bank or all
    products adopt FILE.json                    a bank adopts a template (ProductAdopt)
    products update CODE FILE.json              new values, a new version (ProductValues)
    products pause CODE --reason R              no new lines or drawdowns
    products resume CODE --reason R
    products versions CODE                      every version's terms

Refusals print `CODE: detail` (the API's codes) and exit 2; nothing is changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.admin_common import print_change

CLI_OPERATOR = "cli"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("products", help="union templates and member banks' products")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("templates", help="every template")
    add = actions.add_parser("template-add", help="a union template from a JSON file")
    add.add_argument("file", type=Path)
    upd = actions.add_parser("template-update", help="a template's next version")
    upd.add_argument("code")
    upd.add_argument("file", type=Path)
    lst = actions.add_parser("list", help="products")
    lst.add_argument("--tenant")
    adopt = actions.add_parser("adopt", help="a member bank adopts a template (JSON file)")
    adopt.add_argument("file", type=Path)
    change = actions.add_parser("update", help="a product's new values (JSON file)")
    change.add_argument("code")
    change.add_argument("file", type=Path)
    for name in ("pause", "resume"):
        status = actions.add_parser(name, help=f"{name} a product")
        status.add_argument("code")
        status.add_argument("--reason", required=True)
    versions = actions.add_parser("versions", help="every version of a product")
    versions.add_argument("code")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import msgspec

    from engine.contract import messages as m
    from engine.contract.errors import BadRequest
    from engine.stores import product_admin as pa

    def body(kind: Any) -> Any:
        try:
            return msgspec.json.decode(args.file.read_bytes(), type=kind)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadRequest("BODY_INVALID", f"{args.file}: {exc}") from exc

    async def act(conn: Any) -> Any:
        action = args.action
        if action == "templates":
            return m.TemplateList(await pa.list_templates(conn))
        if action == "template-add":
            return await pa.create_template(conn, body(m.TemplateCreate))
        if action == "template-update":
            return (await pa.update_template(conn, args.code, body(m.TemplateBody)))[1]
        if action == "list":
            return m.ProductList(await pa.list_products(conn, args.tenant))
        if action == "adopt":
            adoption = body(m.ProductAdopt)
            if adoption.tenant_id is None:
                raise BadRequest("TENANT_REQUIRED", "name the adopting member bank: tenant_id")
            return await pa.adopt(conn, adoption, adoption.tenant_id, CLI_OPERATOR)
        if action == "update":
            values = body(m.ProductValues)
            return (await pa.update_product(conn, args.code, values, None, CLI_OPERATOR))[1]
        if action in ("pause", "resume"):
            status = "paused" if action == "pause" else "active"
            changed = await pa.set_product_status(
                conn, args.code, status, args.reason, scope=None, by=CLI_OPERATOR
            )
            return changed[1]
        return await pa.product_versions(conn, args.code, None)

    return print_change("products", act)

"""`python -m engine officers add ID --tenant T --branch B --name N | disable ID | list`:
the loan officers the day-end's collection queue hands late loans to."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.admin_common import run_on_control


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("officers", help="loan officers of the collection queue")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add (or update) an officer")
    add.add_argument("officer_id")
    add.add_argument("--tenant", required=True)
    add.add_argument("--branch", default="main")
    add.add_argument("--name", required=True)
    disable = actions.add_parser("disable", help="no new cases for this officer")
    disable.add_argument("officer_id")
    actions.add_parser("list", help="every officer")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncpg

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        if args.action == "add":
            try:
                await conn.execute(
                    """INSERT INTO loan_officer (officer_id, tenant_id, branch_code, name)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT (officer_id) DO UPDATE SET tenant_id = $2, branch_code = $3,
                           name = $4, active = true""",
                    args.officer_id,
                    args.tenant,
                    args.branch,
                    args.name,
                )
            except (asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError) as exc:
                print(f"officers: refused: {exc.__class__.__name__}: check the id, "
                      "tenant and branch", file=sys.stderr)  # fmt: skip
                return 2
        elif args.action == "disable":
            status = await conn.execute(
                "UPDATE loan_officer SET active = false WHERE officer_id = $1", args.officer_id
            )
            if status == "UPDATE 0":
                print(f"officers: no officer {args.officer_id}", file=sys.stderr)
                return 1
        rows = await conn.fetch(
            "SELECT officer_id, tenant_id, branch_code, name, active FROM loan_officer "
            "ORDER BY tenant_id, branch_code, officer_id"
        )
        for r in rows:
            state = "active" if r["active"] else "disabled"
            print(f"{r['officer_id']}\t{r['tenant_id']}\t{r['branch_code']}\t{r['name']}\t{state}")
        return 0

    return run_on_control(work)

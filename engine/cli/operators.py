"""`python -m engine operators create|list|unlock|disable|password`: operator accounts from
the command line, the way to the first admin of a bank (later ones: the admin API).

    create --tenant T --login L --role R [--role R2]   the password from
        $ENGINE_OPERATOR_PASSWORD, else a line on stdin (when not a terminal), else asked
        twice; at least 12 characters, not containing the login
    list [--tenant T]          operators, their roles, status and lock (never hashes)
    unlock LOGIN               lift a lockout
    disable LOGIN --reason R   disable an operator, ending their sessions
    password LOGIN             a new password (read as for create), ending their sessions

Each change is appended to the audit trail as done by `cli:<OS user>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from engine.cli.admin_common import run_on_control

PASSWORD_ENV = "ENGINE_OPERATOR_PASSWORD"  # noqa: S105 - the variable's name


def register(subparsers: Any) -> None:
    from engine.operators.roles import ROLES

    parser = subparsers.add_parser("operators", help="manage operator accounts")
    sub = parser.add_subparsers(dest="operators_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create an operator")
    create.add_argument("--tenant", required=True)
    create.add_argument("--login", required=True)
    create.add_argument("--role", action="append", required=True, choices=ROLES)
    listing = sub.add_parser("list", help="list operators")
    listing.add_argument("--tenant")
    unlock = sub.add_parser("unlock", help="lift an operator's lockout")
    unlock.add_argument("login")
    disable = sub.add_parser("disable", help="disable an operator")
    disable.add_argument("login")
    disable.add_argument("--reason", required=True)
    password = sub.add_parser("password", help="set a new password")
    password.add_argument("login")
    parser.set_defaults(func=run)


def read_password() -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cli_principal() -> Any:
    import getpass

    from engine.operators.principal import Principal

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(
        operator_id="cli", tenant_id="", roles=frozenset({"union_admin"}), login=f"cli:{user}"
    )


def run(args: argparse.Namespace) -> int:
    from engine.contract.errors import ApiError
    from engine.operators import accounts, passwords

    command = args.operators_command

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        actor = cli_principal()
        ph = accounts.hasher_of(settings.operators)
        if command == "list":
            for view in await accounts.listing(conn, None):
                if args.tenant and view["tenant_id"] != args.tenant:
                    continue
                lock = f"locked until {view['locked_until']}" if view["locked_until"] else ""
                print(view["operator_id"], view["tenant_id"], view["login"],
                      ",".join(view["roles"]), view["status"], lock, sep="\t")  # fmt: skip
            return 0
        password = ""
        if command in ("create", "password"):
            password = read_password()
            passwords.check_rules(password, args.login)
        async with conn.transaction():
            if command == "create":
                view = await accounts.create(
                    conn, actor, tenant_id=args.tenant, login_name=args.login,
                    password_hash=await accounts.hash_password(ph, password),
                    roles=list(dict.fromkeys(args.role)), request_id="cli",
                )  # fmt: skip
                print(f"operator {view['operator_id']} {view['login']} of {view['tenant_id']}: "
                      f"{','.join(view['roles'])}")  # fmt: skip
                return 0
            operator_id = await conn.fetchval(
                "SELECT operator_id FROM operator WHERE login = $1", args.login
            )
            if operator_id is None:
                print(f"operators: no operator {args.login!r}", file=sys.stderr)
                return 1
            kwargs: dict[str, Any] = {"request_id": "cli"}
            if command == "disable":
                kwargs["reason"] = args.reason
            if command == "password":
                kwargs["password_hash"] = await accounts.hash_password(ph, password)
            view = await accounts.change(conn, actor, operator_id, f"operator.{command}", **kwargs)
            print(f"operator {view['login']}: {view['status']}, not locked")
            return 0

    try:
        return run_on_control(work)
    except ApiError as exc:
        print(f"operators: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a password refused by the rules, or typed twice differently
        print(f"operators: {exc}", file=sys.stderr)
        return 1

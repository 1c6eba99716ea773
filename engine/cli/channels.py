"""`python -m engine channels add|rotate|rename|disable|enable|signature-v1|rate-limit|list`:
channel credentials, the display name customers see in their SMS, the signature
changeover window and the channel's rate limit.

Secrets are stored encrypted (AES-GCM, bound to the channel id) in the control
database and printed once, when made; they are never logged. Engines pick up a
change within `reference_refresh_s` seconds.

    signature-v1 ID --days N | --close   the channel's changeover window for signature
                                         version 1 (API.md): accepted N more days, or no more
    rate-limit ID --per-second R | --default   the channel's own request rate
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.admin_common import run_on_control


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("channels", help="manage channel credentials")
    sub = parser.add_subparsers(dest="channels_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a channel with a new secret")
    add.add_argument("channel_id")
    add.add_argument("--tenant", required=True)
    add.add_argument("--name", help="display name in SMS (default: the channel ID)")
    rename = sub.add_parser("rename", help="set the display name customers see in SMS")
    rename.add_argument("channel_id")
    rename.add_argument("--name", required=True)
    rotate = sub.add_parser("rotate", help="replace a channel's secret")
    rotate.add_argument("channel_id")
    for name in ("disable", "enable"):
        action = sub.add_parser(name, help=f"{name} a channel")
        action.add_argument("channel_id")
        action.add_argument("--reason", required=True)
    window = sub.add_parser("signature-v1", help="open or close a signature v1 window")
    window.add_argument("channel_id")
    how = window.add_mutually_exclusive_group(required=True)
    how.add_argument("--days", type=int, help="accept version 1 for this many more days")
    how.add_argument("--close", action="store_true", help="version 2 only, from now")
    rate = sub.add_parser("rate-limit", help="set a channel's own requests per second")
    rate.add_argument("channel_id")
    which = rate.add_mutually_exclusive_group(required=True)
    which.add_argument("--per-second", type=float)
    which.add_argument("--default", action="store_true", help="the engine's default")
    sub.add_parser("list", help="list channels (no secrets)")
    parser.set_defaults(func=run)


async def _set_security(conn: Any, args: argparse.Namespace) -> str:
    import datetime as dt

    from engine.stores import control_admin

    if args.channels_command == "signature-v1":
        if args.close:
            await control_admin.set_signature_v1_until(conn, args.channel_id, None)
            return f"channel {args.channel_id}: signature version 2 only"
        if not 1 <= args.days <= 365:
            raise control_admin.AdminError("--days must be 1..365")
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.days)
        await control_admin.set_signature_v1_until(conn, args.channel_id, until)
        return f"channel {args.channel_id}: signature version 1 accepted until {until:%F %H:%M} UTC"
    per_s = None if args.default else args.per_second
    await control_admin.set_rate_limit(conn, args.channel_id, per_s)
    return f"channel {args.channel_id}: rate limit {per_s or 'default'} per second"


def run(args: argparse.Namespace) -> int:
    from engine.cli.operators import cli_principal
    from engine.operators import audit
    from engine.stores import control_admin

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        command = args.channels_command
        if command == "list":
            for row in await conn.fetch(
                """SELECT channel_id, tenant_id, status, display_name, signature_v1_until,
                          rate_limit_per_s
                   FROM channel ORDER BY 1"""
            ):
                v1 = row["signature_v1_until"]
                signature = f"v1 until {v1:%F}" if v1 else "v2 only"
                rate = f"rate {row['rate_limit_per_s'] or 'default'}/s"
                print(
                    f"{row['channel_id']}\t{row['tenant_id']}\t{row['status']}",
                    row["display_name"],
                    signature,
                    rate,
                    sep="\t",
                )
            return 0
        # Every change commits with its audit entry (done by `cli:<OS user>`).
        async with conn.transaction():
            status = await change(conn, cipher)
            entry = audit.event(
                cli_principal(), f"channel.{command}", f"channel:{args.channel_id}",
                after={"command": command}, request_id="cli",
            )  # fmt: skip
            await audit.append(conn, entry)
        return status

    async def change(conn: Any, cipher: Any) -> int:
        command = args.channels_command
        if command in ("signature-v1", "rate-limit"):
            print(await _set_security(conn, args))
            return 0
        if command == "rename":
            await control_admin.rename_channel(conn, args.channel_id, args.name)
            print(f"channel {args.channel_id} is shown as {args.name.strip()!r}")
            return 0
        if command in ("add", "rotate"):
            secret = control_admin.new_secret()
            if command == "add":
                await control_admin.add_channel(
                    conn, cipher, args.channel_id, args.tenant, secret, display_name=args.name
                )
            else:
                await control_admin.rotate_channel(conn, cipher, args.channel_id, secret)
            print(f"channel {args.channel_id} secret (shown once): {secret}")
            return 0
        status = "disabled" if command == "disable" else "active"
        await control_admin.set_channel_status(conn, args.channel_id, status, args.reason)
        print(f"channel {args.channel_id} {status}")
        return 0

    try:
        return run_on_control(work)
    except control_admin.AdminError as exc:
        print(f"channels: {exc}", file=sys.stderr)
        return 1

"""`python -m engine channels add|rotate|rename|disable|enable|list`: channel credentials
and the display name customers see in their SMS.

Secrets are stored encrypted (AES-GCM) in the control database and printed
once, when made; they are never logged. Engines pick up a change within
`reference_refresh_s` seconds.
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
    sub.add_parser("list", help="list channels (no secrets)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.stores import control_admin

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        command = args.channels_command
        if command == "list":
            for row in await conn.fetch(
                "SELECT channel_id, tenant_id, status, display_name FROM channel ORDER BY 1"
            ):
                print(
                    f"{row['channel_id']}\t{row['tenant_id']}\t{row['status']}"
                    f"\t{row['display_name']}"
                )
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

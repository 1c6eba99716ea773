"""`python -m engine relay`: drain the outboxes of every shard (see `engine.relay.executor`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relay", help="carry out outbox instructions (core banking, SMS)"
    )
    parser.add_argument(
        "--lane",
        choices=("all", "online", "batch"),
        default="all",
        help="which outbox rows: the day-end's (batch), the rest (online), or all (default)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvloop

    from engine.relay.main import run_relay
    from engine.runtime.logs import setup_logging
    from engine.runtime.priority import lower_process
    from engine.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    lower_process(settings.external.relay_nice)
    uvloop.run(run_relay(settings, args.lane))
    return 0

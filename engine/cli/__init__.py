"""Subcommands of `python -m engine`.

`COMMANDS` maps each command to its module. A module exposes
`register(subparsers)`, which adds its parser and sets `func` (an
`argparse.Namespace -> int` callable returning the exit status). Only the
module of the command being run is imported, so `python -m engine schedule`
does not pay for aiohttp and asyncpg.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "migrate": "engine.cli.migrate",
    "serve": "engine.cli.serve",
    "ledger": "engine.cli.ledger",
    "schedule": "engine.cli.schedule",
    "channels": "engine.cli.channels",
    "demo": "engine.cli.demo",
    "clock": "engine.cli.clock",
    "call": "engine.cli.call",
    "relay": "engine.cli.relay",
    "reconcile": "engine.cli.reconcile",
    "whitelist": "engine.cli.lists",
    "blacklist": "engine.cli.lists",
    "bureauflag": "engine.cli.lists",
    "evidence": "engine.cli.evidence",
    "eod": "engine.cli.eod",
    "officers": "engine.cli.officers",
    "operators": "engine.cli.operators",
    "audit": "engine.cli.audit",
    "products": "engine.cli.products",
    "tenants": "engine.cli.tenants",
    "report": "engine.cli.report",
}

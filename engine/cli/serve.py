"""`python -m engine serve`: run the HTTP engine (see `engine.serve`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="serve the channel API with prefork workers")
    parser.add_argument("--port", type=int, help="override http.port")
    parser.add_argument("--workers", type=int, help="override http.workers")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import msgspec

    from engine.serve import serve
    from engine.settings import load_settings

    settings = load_settings()
    http = settings.http
    if args.port is not None:
        http = msgspec.structs.replace(http, port=args.port)
    if args.workers is not None:
        http = msgspec.structs.replace(http, workers=args.workers)
    return serve(msgspec.structs.replace(settings, http=http))

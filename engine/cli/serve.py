"""`python -m engine serve`: run the HTTP engine (see `engine.serve`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="serve the channel API with prefork workers")
    parser.add_argument("--port", type=int, help="override http.port")
    parser.add_argument("--workers", type=int, help="override http.workers")
    parser.set_defaults(func=run)


def _metrics_dir(port: int) -> None:
    """Prometheus multiprocess mode: a fresh directory per engine, set before any import."""
    import os
    import shutil
    from pathlib import Path

    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    directory = Path(os.environ.get("STACK_RUN_DIR", ".run")) / "metrics" / f"engine-{port}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


def run(args: argparse.Namespace) -> int:
    import msgspec

    from engine.settings import load_settings

    settings = load_settings()
    http = settings.http
    if args.port is not None:
        http = msgspec.structs.replace(http, port=args.port)
    if args.workers is not None:
        http = msgspec.structs.replace(http, workers=args.workers)
    _metrics_dir(http.port)
    from engine.serve import serve

    return serve(msgspec.structs.replace(settings, http=http))

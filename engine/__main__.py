"""The lending engine's commands: `python -m engine COMMAND --help` for one of them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from engine.cli import COMMANDS


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `only` (then only its module is imported).
    A module may register several commands (`lists`: whitelist, blacklist, bureauflag): each
    module is registered once."""
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [COMMANDS[only]] if only is not None else COMMANDS.values()
    for module in dict.fromkeys(wanted):
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a newcomer's first command: the list of commands
        build_parser().print_help()
        return 2
    only = argv[0] if argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from engine.settings import SettingsError

    try:
        return func(args)
    except SettingsError as exc:  # one line that says which key, not a traceback
        print(f"engine: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

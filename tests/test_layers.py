"""The engine's packages import only the ones below them (engine/__init__.py draws the
stack): no package reaches up, no two import each other, and `ledger` and `sharding`
never import `engine`. Lazy imports inside functions count as much as top-level ones."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

# Lowest first. A package may import its own modules and those of lower ranks.
RANKS: dict[str, int] = {
    "contract": 0,
    "security": 0,
    "adapters": 0,
    "runtime": 1,
    "stores": 2,
    "idempotency": 3,
    "services": 4,
    "origination": 5,
    "eod": 5,  # the day-end: services below it; the scheduler and CLI above
    "reports": 5,  # reports from the ledger: stores below; HTTP and CLI above
    "relay": 6,
    "operators": 6,  # accounts, sessions, roles, the audit trail (uses origination's chain)
    "http": 7,
    "<entry>": 8,  # __main__, serve, migrate, cli/: processes and commands
}
# `settings` is the one module every layer may read: it imports only security.pii.
SETTINGS_MAY_IMPORT = {"security"}
ENTRY_MODULES = {"__main__", "serve", "migrate", "cli"}


def _package_of(module: str) -> str | None:
    """The concern of an `engine.…` module, or None for `engine` and `engine.settings`."""
    parts = module.split(".")
    assert parts[0] == "engine", module
    if len(parts) == 1 or parts[1] == "settings":
        return None
    if parts[1] in ENTRY_MODULES:
        return "<entry>"
    assert parts[1] in RANKS, f"{module}: engine/{parts[1]} is not in the layer table"
    return parts[1]


def _modules(top: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / top).rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            # `from engine import x` imports the module engine.x
            for alias in node.names:
                yield f"{target}.{alias.name}"


def _engine_edges() -> list[tuple[str, str, str]]:
    known = {name for name, _ in _modules("engine")}
    edges = []
    for module, path in _modules("engine"):
        for target in _imports(module, path):
            if target.startswith("engine") and target in known:
                edges.append((module, target, str(path.relative_to(ROOT))))
    return edges


def test_every_module_belongs_to_a_layer() -> None:
    for module, _ in _modules("engine"):
        _package_of(module)


def test_no_package_imports_one_above_it() -> None:
    wrong = []
    for source, target, where in _engine_edges():
        src, dst = _package_of(source), _package_of(target)
        if target == "engine.settings" or dst is None:
            continue
        if src is None:  # engine.settings itself
            if source == "engine.settings" and dst not in SETTINGS_MAY_IMPORT:
                wrong.append(f"{where}: settings imports {target}")
            continue
        if src != dst and RANKS[dst] >= RANKS[src]:
            wrong.append(f"{where}: {src} (rank {RANKS[src]}) imports {target} (rank {RANKS[dst]})")
    assert not wrong, "\n".join(wrong)


def test_ledger_and_sharding_never_import_engine() -> None:
    for top in ("ledger", "sharding"):
        for module, path in _modules(top):
            for target in _imports(module, path):
                assert not target.startswith("engine"), f"{path}: imports {target}"


def test_ledger_money_math_does_no_io() -> None:
    io = ("asyncpg", "aiohttp", "redis", "socket", "engine", "sharding")
    for module, path in _modules("ledger"):
        if module in ("ledger.store",):  # the ledger's SQL, by design
            continue
        for target in _imports(module, path):
            assert not target.startswith(io), f"{path}: imports {target}"

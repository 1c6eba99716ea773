"""Everything a day-end runner needs, started and stopped in order:

settings ─► rules ─► control plane (pool, ID worker lease, cipher, reference) ─► EodRunner
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from engine.eod.rules import RULES_FILE_DEFAULT, load_rules
from engine.eod.runner import EodRunner
from engine.settings import Settings
from engine.stores.control_plane import control_plane


@contextlib.asynccontextmanager
async def eod_runner(settings: Settings, name: str = "eod") -> AsyncIterator[EodRunner]:
    rules_file = settings.eod.rules_file
    rules = load_rules(Path(rules_file) if rules_file else RULES_FILE_DEFAULT)
    async with control_plane(settings, name) as plane:
        yield EodRunner(
            settings,
            control=plane.control,
            ids=plane.ids,
            cipher=plane.cipher,
            reference=plane.reference,
            rules=rules,
        )

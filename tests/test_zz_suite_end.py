"""Run last (file order): what must hold after the whole suite.

- No response body and no engine log line holds a full ID number, card or phone
  that the suite sent.
- The trial balance is zero on every shard, account totals equal their legs.
"""

from __future__ import annotations

import re

import asyncpg

from engine.settings import Settings
from ledger.store import trial_balance
from tests import books
from tests.api_client import BODIES_SEEN, PERSONAL_SENT
from tests.conftest import ROOT, run_cli

_LONG_DIGITS = re.compile(rb"(?<![0-9A-Za-z_-])\d{11,}(?![0-9A-Za-z_-])")


def test_no_full_personal_number_in_bodies_or_logs() -> None:
    assert len(PERSONAL_SENT) > 10 and len(BODIES_SEEN) > 100  # the suite really ran
    needles = [value.encode() for value in PERSONAL_SENT]
    for body in BODIES_SEEN:
        for needle in needles:
            assert needle not in body, body[:200]
    logs = list((ROOT / ".run" / "log").glob("test-engine-*.log"))
    assert logs
    for path in logs:
        text = path.read_bytes()
        for needle in needles:
            assert needle not in text, path
        # The scrubber leaves no long run of digits at all (IDs are masked as well).
        assert _LONG_DIGITS.search(text) is None, path


async def test_trial_balance_zero_on_every_shard(settings: Settings) -> None:
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            result = await trial_balance(conn, deep=True)
        finally:
            await conn.close()
        assert result.balanced, (shard.name, result)
    done = run_cli("ledger", "trial-balance", "--deep")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT BALANCED" not in done.stdout


async def test_every_books_invariant_holds_on_every_shard(settings: Settings) -> None:
    """Lines against their loans, receivables against plans and repayments (tests/books.py)."""
    found = []
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            found += [f"{shard.name}: {p}" for p in await books.problems(conn)]
        finally:
            await conn.close()
    assert found == []

"""A control database and two shard databases of a test's own, on the stack's servers.

The day-end touches every loan of a shard and moves the one business date: run on the
suite's shared databases it would charge other tests' loans and freeze their lines.
An `Isolated` set is created empty, migrated, given the demo data and a business
date, and dropped afterwards; the engine's own code (migrate, demo load, the seeder,
the day-end, a relay's completion) runs against it through its settings.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg

from engine.eod.runner import DayOutcome
from engine.eod.setup import eod_runner
from engine.migrate import migrate_all
from engine.security.pii import PiiCipher
from engine.services.repayments import complete_repayment
from engine.settings import Settings, load_settings
from engine.stores import outbox
from engine.stores.control_admin import load_demo, set_business_date
from engine.stores.reference import ReferenceData, load_reference
from sharding.ids import IdGenerator
from tests import books
from tests.conftest import ROOT

TEST_WORKER = 126  # IDs made by the tests' own completions: a worker no engine leases here


class Isolated:
    def __init__(
        self, base_dsn: str, tmp: Path, extra_env: dict[str, str] | None = None,
        second_base: str | None = None,
    ) -> None:  # fmt: skip
        """All three databases on `base_dsn`'s server, or shard s1 on `second_base`'s (a
        test that stops one server then loses one shard of two, not both)."""
        tag = secrets.token_hex(3)
        self.names = {"control": f"iso_control_{tag}", "s0": f"iso_s0_{tag}", "s1": f"iso_s1_{tag}"}
        self._bases = {"control": base_dsn, "s0": base_dsn, "s1": second_base or base_dsn}
        self.tmp = tmp
        dsn = {key: f"{self._bases[key]}/{name}" for key, name in self.names.items()}
        self.env = {
            "ENGINE_ENV": "test",
            "ENGINE_CONTROL_DSN": dsn["control"],
            "ENGINE_SHARD_DSNS": f"shard_0={dsn['s0']},shard_1={dsn['s1']}",
            "ENGINE_EOD_SETTLE_S": "0",
            "LOADTEST_SEEDED": str(tmp / "seeded.csv"),
        } | (extra_env or {})
        self.settings: Settings = load_settings(self.env)

    @property
    def shard_dsns(self) -> list[str]:
        return [s.dsn for s in self.settings.shards]

    async def create(self, business_date: dt.date) -> None:
        for key, name in self.names.items():
            admin = await asyncpg.connect(self._bases[key] + "/postgres")
            try:
                await admin.execute(f"CREATE DATABASE {name}")
            finally:
                await admin.close()
        await migrate_all(self.settings)
        conn = await asyncpg.connect(self.settings.control_dsn)
        try:
            await load_demo(conn, self.cipher())
            await set_business_date(conn, business_date)
        finally:
            await conn.close()

    async def drop(self) -> None:
        for key, name in self.names.items():
            admin = await asyncpg.connect(self._bases[key] + "/postgres", timeout=30)
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await admin.close()

    def cipher(self) -> PiiCipher:
        crypto = self.settings.crypto
        return PiiCipher.from_config(crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key)

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=dict(os.environ) | self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def seed(self, customers: int, loans: int = 4, due_today_every: int = 8) -> None:
        result = self.cli(
            "-m", "loadtest", "seed", "--customers", str(customers),
            "--loans-per-customer", str(loans), "--workers", "1", "--no-analyze",
            "--due-today-every", str(due_today_every),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    async def eod(self, day: dt.date | None = None) -> list[DayOutcome]:
        async with eod_runner(self.settings, "eod-test") as runner:
            return await runner.run(day)

    async def business_date(self) -> dt.date:
        conn = await asyncpg.connect(self.settings.control_dsn)
        try:
            value = await conn.fetchval("SELECT business_date FROM business_clock")
        finally:
            await conn.close()
        assert isinstance(value, dt.date)
        return value

    async def reference(self) -> ReferenceData:
        control = await asyncpg.create_pool(self.settings.control_dsn, min_size=1, max_size=1)
        try:
            return await load_reference(control, self.cipher())
        finally:
            await control.close()

    async def settle_debits(self, *, succeeded: bool) -> int:
        """What the relay does when core answers every pending debit: complete each."""
        reference = await self.reference()
        ids = IdGenerator(TEST_WORKER, lambda: True)
        done = 0
        for dsn in self.shard_dsns:
            conn = await asyncpg.connect(dsn)
            try:
                for row in await outbox.claim(conn, 10_000, 60.0):
                    if row.kind != "debit":
                        continue
                    async with conn.transaction():
                        outcome = "SUCCEEDED" if succeeded else "INSUFFICIENT_FUNDS"
                        await complete_repayment(
                            conn, ids, reference, row, succeeded=succeeded, outcome=outcome
                        )
                    done += 1
            finally:
                await conn.close()
        return done

    async def problems(self, accrued_through: dt.date | None = None) -> list[str]:
        found = []
        for dsn in self.shard_dsns:
            conn = await asyncpg.connect(dsn)
            try:
                found += [
                    f"{dsn.rsplit('/', 1)[1]}: {p}"
                    for p in await books.problems(conn, accrued_through)
                ]
            finally:
                await conn.close()
        return found


__all__ = ["Isolated"]

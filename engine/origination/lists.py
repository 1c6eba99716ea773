"""White and black lists: bulk import from CSV, lookup by the keyed ID-number index.

    white list  tenant_id,id_number,limit,annual_rate_pct,repayment_methods,max_term_months
                (repayment_methods separated by '|')
    black list  tenant_id,id_number,reason      (tenant_id '*' lists for every tenant)
    bureau flags  tenant_id,id_number,flag      (a code, e.g. BUREAU_OVERDUE; empty clears;
                tenant_id '*': the person's customers in every tenant) — set on existing
                customers, whose drawdowns it stops (the day-end sets the same column)

A file is checked whole before anything is written: one bad row and nothing is
imported, and every bad row is reported with its line number. Rows are stored
on the person's shard (routed by ID number), never with the ID number itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec

from engine.security.identity import IdentityError, parse_id_number
from engine.security.pii import PiiCipher
from engine.stores.shards import acquire
from ledger.money import MoneyFormatError, parse_amount, parse_rate_pct
from ledger.schedule import RepaymentMethod
from sharding.pools import ShardPools
from sharding.routing import logical_shard_for_id_number

ID_NUMBER = "id_number"
WHITE_COLUMNS = [
    "tenant_id",
    "id_number",
    "limit",
    "annual_rate_pct",
    "repayment_methods",
    "max_term_months",
]
BLACK_COLUMNS = ["tenant_id", "id_number", "reason"]
FLAG_COLUMNS = ["tenant_id", "id_number", "flag"]
FLAG_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
ROWS_MAX = 1_000_000
BATCH_ROWS = 1000


class ListFileError(ValueError):
    """The file cannot be imported; `problems` lists every bad row."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


class WhiteEntry(msgspec.Struct, frozen=True):
    tenant_id: str
    id_number: str
    limit_fen: int
    annual_rate_pct: Decimal
    repayment_methods: list[str]
    max_term_months: int


class BlackEntry(msgspec.Struct, frozen=True):
    tenant_id: str
    id_number: str
    reason: str


class FlagEntry(msgspec.Struct, frozen=True):
    tenant_id: str
    id_number: str
    flag: str | None  # None: cleared


def _rows(source: Path | str, columns: list[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """The rows of a file (a Path) or of a CSV text already read (an API body)."""
    with (
        source.open(newline="", encoding="utf-8-sig")
        if isinstance(source, Path)
        else io.StringIO(source.removeprefix("\ufeff"), newline="")
    ) as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != columns:
            raise ListFileError([f"line 1: header must be {','.join(columns)}"])
        for number, row in enumerate(reader, start=2):
            if number - 1 > ROWS_MAX:
                raise ListFileError([f"more than {ROWS_MAX} rows: split the file"])
            yield number, row


def _white(row: dict[str, str], today: dt.date) -> WhiteEntry:
    methods = [m.strip() for m in row["repayment_methods"].split("|") if m.strip()]
    unknown = [m for m in methods if m not in set(RepaymentMethod)]
    if not methods or unknown:
        raise ValueError(f"repayment_methods {row['repayment_methods']!r} unknown or empty")
    term = int(row["max_term_months"])
    if not 1 <= term <= 600:
        raise ValueError("max_term_months must be 1..600")
    return WhiteEntry(
        tenant_id=row["tenant_id"].strip(),
        id_number=parse_id_number(row["id_number"], today=today).value,
        limit_fen=parse_amount(row["limit"].strip()),
        annual_rate_pct=parse_rate_pct(row["annual_rate_pct"].strip()),
        repayment_methods=methods,
        max_term_months=term,
    )


def read_white_list(path: Path | str, today: dt.date) -> list[WhiteEntry]:
    """The entries of a file (a Path) or of its text (a str)."""
    entries, problems = [], []
    for number, row in _rows(path, WHITE_COLUMNS):
        try:
            entries.append(_white(row, today))
        except (IdentityError, MoneyFormatError) as exc:
            problems.append(f"line {number}: {exc.code}: {exc.detail}")
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise ListFileError(problems)
    return entries


def read_black_list(path: Path, today: dt.date) -> list[BlackEntry]:
    entries, problems = [], []
    for number, row in _rows(path, BLACK_COLUMNS):
        try:
            reason = (row["reason"] or "").strip()
            if not reason:
                raise ValueError("reason must not be empty")
            value = parse_id_number(row["id_number"], today=today).value
            entries.append(BlackEntry(row["tenant_id"].strip(), value, reason[:200]))
        except IdentityError as exc:
            problems.append(f"line {number}: {exc.code}: {exc.detail}")
        except (ValueError, AttributeError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise ListFileError(problems)
    return entries


def read_bureau_flags(path: Path, today: dt.date) -> list[FlagEntry]:
    entries, problems = [], []
    for number, row in _rows(path, FLAG_COLUMNS):
        try:
            flag = (row["flag"] or "").strip() or None
            if flag is not None and FLAG_PATTERN.match(flag) is None:
                raise ValueError("flag must be a code like BUREAU_OVERDUE (or empty to clear)")
            value = parse_id_number(row["id_number"], today=today).value
            entries.append(FlagEntry(row["tenant_id"].strip(), value, flag))
        except IdentityError as exc:
            problems.append(f"line {number}: {exc.code}: {exc.detail}")
        except (ValueError, AttributeError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise ListFileError(problems)
    return entries


async def store_bureau_flags(pools: ShardPools, cipher: PiiCipher, entries: list[FlagEntry]) -> int:
    """Set (or clear) the flag of the customers named; returns how many customers changed
    (a person who is not a customer of the tenant has nothing to flag)."""
    by_shard: dict[str, list[tuple[object, ...]]] = {}
    for e in entries:
        shard = pools.physical_for(logical_shard_for_id_number(e.id_number)).name
        row = (e.tenant_id, cipher.index(e.id_number, context=ID_NUMBER), e.flag)
        by_shard.setdefault(shard, []).append(row)
    sql = """UPDATE customer SET bureau_flag = $3,
                 bureau_flagged_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END
             WHERE id_number_index = $2 AND ($1 = '*' OR tenant_id = $1)"""
    changed = 0
    for shard, rows in by_shard.items():
        async with acquire(pools.pool(shard)) as conn:
            for start in range(0, len(rows), BATCH_ROWS):
                async with conn.transaction():
                    for args in rows[start : start + BATCH_ROWS]:
                        status = await conn.execute(sql, *args)
                        changed += int(status.split()[-1])
    return changed


async def store_white_list(pools: ShardPools, cipher: PiiCipher, entries: list[WhiteEntry]) -> int:
    by_shard: dict[str, list[tuple[object, ...]]] = {}
    for e in entries:
        shard = pools.physical_for(logical_shard_for_id_number(e.id_number)).name
        index = cipher.index(e.id_number, context=ID_NUMBER)
        row = (
            e.tenant_id,
            index,
            e.limit_fen,
            e.annual_rate_pct,
            e.repayment_methods,
            e.max_term_months,
        )
        by_shard.setdefault(shard, []).append(row)
    sql = """INSERT INTO whitelist_entry (tenant_id, id_number_index, limit_fen, annual_rate_pct,
                 repayment_methods, max_term_months) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, id_number_index) DO UPDATE SET limit_fen = excluded.limit_fen,
                 annual_rate_pct = excluded.annual_rate_pct,
                 repayment_methods = excluded.repayment_methods,
                 max_term_months = excluded.max_term_months, imported_at = now()"""
    await _write(pools, by_shard, sql)
    return len(entries)


async def store_black_list(pools: ShardPools, cipher: PiiCipher, entries: list[BlackEntry]) -> int:
    by_shard: dict[str, list[tuple[object, ...]]] = {}
    for e in entries:
        shard = pools.physical_for(logical_shard_for_id_number(e.id_number)).name
        row = (e.tenant_id, cipher.index(e.id_number, context=ID_NUMBER), e.reason)
        by_shard.setdefault(shard, []).append(row)
    sql = """INSERT INTO blacklist_entry (tenant_id, id_number_index, reason) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, id_number_index) DO UPDATE SET reason = excluded.reason"""
    await _write(pools, by_shard, sql)
    return len(entries)


async def _write(
    pools: ShardPools, by_shard: dict[str, list[tuple[object, ...]]], sql: str
) -> None:
    for shard, rows in by_shard.items():
        async with acquire(pools.pool(shard)) as conn:
            for start in range(0, len(rows), BATCH_ROWS):
                async with conn.transaction():
                    await conn.executemany(sql, rows[start : start + BATCH_ROWS])


async def white_entry(
    conn: asyncpg.Connection, tenant_id: str, index: bytes
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT limit_fen, annual_rate_pct, repayment_methods, max_term_months
           FROM whitelist_entry WHERE tenant_id = $1 AND id_number_index = $2""",
        tenant_id,
        index,
    )


async def blacklisted(conn: asyncpg.Connection, tenant_id: str, index: bytes) -> bool:
    hit = await conn.fetchval(
        """SELECT 1 FROM blacklist_entry WHERE tenant_id IN ($1, '*') AND id_number_index = $2
           LIMIT 1""",
        tenant_id,
        index,
    )
    return hit is not None

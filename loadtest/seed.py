"""Seeding at scale: customers, credit lines, loans, plans and their postings, by COPY.

    python -m loadtest seed --customers N --loans-per-customer K [--workers P] [--start I]

    parent ──chunks of customer indexes──► P worker processes, each with one connection
      ▲                                    per physical shard; for each chunk:
      │ progress, seeded rows                1. which of its customers exist? (one query per shard)
      │                                      2. rows of the missing ones (AES-GCM, plans, postings)
      └────────────────────────────────────  3. per shard, one transaction: COPY customer,
                                                credit_line, loan, loan_plan, ledger_account
                                                (the loans' accounts), ledger_txn, ledger_leg;
                                                the loans' accrual rows (the trigger's job);
                                                the ledger's pair check once for the batch;
                                                last, the internal stripes' running totals
                                                (upserted in (code, owner_id) order, as the
                                                engine's postings lock them)

Row triggers (the foreign keys and the ledger's deferred pair check) cost about
three quarters of the database's work on a bulk load; by default the seeder's
sessions skip them (`session_replication_role = replica`, a superuser setting,
which the local stack's `postgres` is) and check the pair rule and the legs'
accounts set-wise per batch instead; `--row-triggers` keeps them (about 40 %
slower). See `write_batch`.

What a seeded customer is, everything derived from its index i (so a second run
writes exactly the same rows and can skip what is there):

- tenant `demo`, ID number `loadtest.client_data.seeded_id_number(i)`, name,
  phone and card likewise; personal fields sealed with AES-256-GCM under the
  published dev key (version 1, the column name and the row's id as AAD) and the ID
  number's keyed HMAC index, as `engine.security.pii` does it (the constants are
  declared again here: the load test does not import the engine); the registered
  card bound to the customer (`customer_card`, by its keyed HMAC), as registration
  does it, so that the load runs may pay and debit it;
- one `demo-credit` line of 200000.00 at 4.35 %, every method, 36 months;
- K loans (status `disbursed`), together at most half the limit, so the lines
  keep room for the load runs' drawdowns; terms 3, 6, 12, 12 months, methods
  equal installment, equal principal, interest only, bullet; drawn 1-27 days
  before the business date (no installment due yet), except every eighth loan
  (`--due-today-every`; 28 spreads the due dates evenly over the month, as
  `make bench-eod` seeds), drawn one month before, whose first installment is due
  today; the postings
  carry the drawdown's time, so no seeded movement falls on today's
  reconciliation (core banking has no record of seeded disbursements);
- the plan of each loan (`ledger.schedule.build_plan`) and the two postings a
  drawdown makes (`ledger.store.posting_args`): Dr loan_principal / Cr
  disbursement_clearing, then Dr disbursement_clearing / Cr core_settlement,
  each on the internal stripe its transaction ID picks.

IDs (`sharding.ids.compose_id`) are deterministic rather than leased: worker
number `SEED_WORKER` (127) and milliseconds in February 2024, `SEED_MS_PER_CUSTOMER`
of them per customer index, giving each customer 56 (ms, seq) slots for its
customer, line, up to 16 loans and their 32 postings. The engine's own IDs
carry the current time, so they can never be one of these whichever worker
number it leases; the seeder refuses to run if its last ID would not lie in
the past. Resuming: chunks are committed per shard as a whole, so a customer
is either there with everything or not at all; a re-run skips those present.
Resume with the same K: a present customer keeps the loans it was seeded with.

Seeded customers, lines and loans look issued in February 2024 to anyone who
reads the time out of their IDs (`sharding.ids.ms_of_id`).

The seeded file (`--seeded-file`, else `loadtest.client_data.seeded_file_path()`:
$LOADTEST_SEEDED, $STACK_RUN_DIR/loadtest/seeded.csv or .run/loadtest/seeded.csv)
lists every customer of the index range, new or already present.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import hmac
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, cast

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.services.loan_store import PLAN_COLUMNS, installment_arrays
from ledger.calendar import add_months
from ledger.chart import Code
from ledger.overdue import fresh_state
from ledger.postings import Leg, Posting
from ledger.schedule import build_plan
from ledger.store import posting_args
from loadtest.client_data import (
    SEEDED_HEADER,
    SEEDED_INDEX_MAX,
    SeededCustomer,
    scramble,
    seeded_bank_card,
    seeded_file_path,
    seeded_id_number,
    seeded_name,
    seeded_phone,
)
from sharding.ids import EPOCH_MS, SEQ_PER_MS, compose_id
from sharding.routing import logical_shard_for_id_number
from sharding.shard_map import PhysicalShard, ShardMap

# --- IDs -------------------------------------------------------------------------------------
SEED_WORKER: Final = 127
SEED_MS_FIRST: Final = 1_706_745_600_000 - EPOCH_MS  # 2024-02-01T00:00:00Z
SEED_MS_PER_CUSTOMER: Final = 7
LOANS_PER_CUSTOMER_MAX: Final = 16
_SLOT_CUSTOMER: Final = 0
_SLOT_LINE: Final = 1
_SLOT_LOAN_FIRST: Final = 2
_SLOT_TXN_FIRST: Final = _SLOT_LOAN_FIRST + LOANS_PER_CUSTOMER_MAX
assert _SLOT_TXN_FIRST + 2 * LOANS_PER_CUSTOMER_MAX <= SEED_MS_PER_CUSTOMER * SEQ_PER_MS

# --- What is seeded ----------------------------------------------------------------------------
TENANT: Final = "demo"
CHANNEL: Final = "demo"
PRODUCT: Final = "demo-credit"
LINE_LIMIT_FEN: Final = 200_000_00
LINE_RATE_PCT: Final = Decimal("4.35")
LINE_MAX_TERM_MONTHS: Final = 36
LINE_METHODS: Final = (
    "bullet",
    "equal_installment",
    "equal_principal",
    "grace_then_equal_installment",
    "interest_only",
)
LOAN_TERMS_MONTHS: Final = (3, 6, 12, 12)
LOAN_METHODS: Final = ("equal_installment", "equal_principal", "interest_only", "bullet")
LOAN_AMOUNT_STEP_FEN: Final = 1_000_00
DUE_TODAY_EVERY: Final = 8  # by default every eighth loan has its first installment due today
_CHINA: Final = dt.timezone(dt.timedelta(hours=8))

# --- Personal data: engine/pii.py's published DEV keys (public, protect nothing) ----------------
DEV_PII_KEY_VERSION: Final = 1
DEV_PII_KEY: Final = b"dev-only-pii-key-v1-0123456789ab"
DEV_INDEX_KEY: Final = b"dev-only-index-key-0123456789abc"
_PII_NONCE_BYTES: Final = 12

# --- Limits -----------------------------------------------------------------------------------
CHUNK_CUSTOMERS_DEFAULT: Final = 500
WORKERS_MAX: Final = 16
PLAN_CACHE_ENTRIES_MAX: Final = 65_536
PROGRESS_EVERY_S: Final = 1.0
COMMAND_TIMEOUT_S: Final = 600.0

_CONTROL_DSN_DEFAULT: Final = "postgresql://postgres@127.0.0.1:55431/control"
_SHARD_DSNS_DEFAULT: Final = (
    "shard_0=postgresql://postgres@127.0.0.1:55431/shard_0,"
    "shard_1=postgresql://postgres@127.0.0.1:55431/shard_1,"
    "shard_2=postgresql://postgres@127.0.0.1:55432/shard_2,"
    "shard_3=postgresql://postgres@127.0.0.1:55432/shard_3"
)

COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "customer": (
        "customer_id", "tenant_id", "name_ciphertext", "id_number_ciphertext",
        "id_number_index", "phone_ciphertext", "bank_card_ciphertext", "id_number_masked",
        "phone_masked", "bank_card_masked", "birth_date", "id_region",
    ),
    "customer_card": ("customer_id", "card_index", "card_masked", "source", "verified"),
    "credit_line": (
        "credit_line_id", "customer_id", "tenant_id", "product_code", "limit_fen", "used_fen",
        "annual_rate_pct", "repayment_methods", "max_term_months", "expires_on",
    ),
    "loan": (
        "loan_id", "customer_id", "credit_line_id", "tenant_id", "channel_id", "product_code",
        "receipt_no", "principal_fen", "outstanding_principal_fen", "annual_rate_pct",
        "penalty_multiplier", "repayment_method", "term_months", "start_date", "maturity_date",
        "status", "disburse_to_ciphertext", "disburse_to_masked", "payment_fen", "requested_at",
        "disbursed_at",
    ),
    "loan_plan": (
        "loan_id", "customer_id", "seq", "due_date", "principal_fen", "interest_fen",
        "balance_after_fen", "principal_paid_fen", "interest_paid_fen", "penalty_unpaid_fen",
        "compound_unpaid_fen", "accrued_through", "penalty_paid_fen",
    ),
    "ledger_account": (
        "code", "owner_id", "customer_id", "debit_total_fen", "credit_total_fen",
    ),
    "ledger_txn": ("txn_id", "customer_id", "kind", "ref_id", "business_date", "created_at"),
    "ledger_leg": ("txn_id", "leg_no", "code", "owner_id", "customer_id", "amount_fen"),
}  # fmt: skip

# The internal stripes' running totals, as ledger.store's posting SQL keeps them.
_STRIPES_SQL: Final = """
INSERT INTO ledger_account AS a (code, owner_id, debit_total_fen, credit_total_fen)
SELECT u.code, u.owner_id, u.d, u.c
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(code, owner_id, d, c)
ORDER BY u.code, u.owner_id
ON CONFLICT (code, owner_id) DO UPDATE
SET debit_total_fen = a.debit_total_fen + excluded.debit_total_fen,
    credit_total_fen = a.credit_total_fen + excluded.credit_total_fen
"""
# Set-based checks of one batch's postings (the row triggers' work, once per batch).
_BATCH_CHECKS_SQL: Final[Mapping[str, str]] = {
    "legs sum to zero, at least two": """
        SELECT count(*) FROM (
            SELECT t.txn_id FROM unnest($1::bigint[]) AS t(txn_id)
            LEFT JOIN ledger_leg l ON l.txn_id = t.txn_id
            GROUP BY t.txn_id
            HAVING coalesce(sum(l.amount_fen), 0) <> 0 OR count(l.txn_id) < 2) AS bad""",
    "every leg's account exists": """
        SELECT count(*) FROM ledger_leg l
        WHERE l.txn_id = ANY($1::bigint[]) AND NOT EXISTS (
            SELECT 1 FROM ledger_account a WHERE a.code = l.code AND a.owner_id = l.owner_id)""",
}
_ANALYZE_SQL: Final = (
    "ANALYZE customer, credit_line, loan, loan_plan, ledger_account, ledger_txn, ledger_leg"
)


class SeedError(RuntimeError):
    """The seeding cannot start or a shard refused a chunk; the message says why."""


@dataclass(frozen=True)
class SeedConfig:
    """One seeding run: the index range, the shape of each customer, where to write."""

    customers: int
    loans_per_customer: int
    start: int = 0
    workers: int = 2
    chunk_customers: int = CHUNK_CUSTOMERS_DEFAULT
    control_dsn: str = _CONTROL_DSN_DEFAULT
    shards: tuple[PhysicalShard, ...] = ()
    seeded_file: Path = field(default_factory=seeded_file_path)
    analyze: bool = True
    row_triggers: bool = False
    due_today_every: int = DUE_TODAY_EVERY

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise SeedError("--customers must be at least 1")
        if not 1 <= self.due_today_every <= 1000:
            raise SeedError("--due-today-every must be 1..1000")
        if not 1 <= self.loans_per_customer <= LOANS_PER_CUSTOMER_MAX:
            raise SeedError(f"--loans-per-customer must be 1..{LOANS_PER_CUSTOMER_MAX}")
        if self.start < 0 or self.start + self.customers > SEEDED_INDEX_MAX:
            raise SeedError(f"customer indexes must stay within 0..{SEEDED_INDEX_MAX - 1}")
        if not 1 <= self.workers <= WORKERS_MAX:
            raise SeedError(f"--workers must be 1..{WORKERS_MAX}")
        if not 1 <= self.chunk_customers <= 100_000:
            raise SeedError("--chunk must be 1..100000")
        if not self.shards:
            raise SeedError("no physical shards configured")

    @property
    def end(self) -> int:
        return self.start + self.customers


def shards_from_env(environ: Mapping[str, str]) -> tuple[PhysicalShard, ...]:
    """The physical shards, in map order, from ENGINE_SHARD_DSNS (name=dsn,...) or the defaults.

    Only the engine's default even map is supported (no ENGINE_CONFIG shard ranges).
    """
    text = environ.get("ENGINE_SHARD_DSNS") or _SHARD_DSNS_DEFAULT
    shards = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, dsn = item.partition("=")
        if not sep or not name or not dsn:
            raise SeedError(f"ENGINE_SHARD_DSNS item {item!r} is not name=dsn")
        shards.append(PhysicalShard(name, dsn))
    return tuple(shards)


def control_dsn_from_env(environ: Mapping[str, str]) -> str:
    return environ.get("ENGINE_CONTROL_DSN") or _CONTROL_DSN_DEFAULT


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse what the seeder cannot serve: prod, or PII keys other than the dev keys."""
    if environ.get("ENGINE_ENV") == "prod":
        raise SeedError("seeding is for the local stack and tests; ENGINE_ENV is prod")
    if environ.get("ENGINE_PII_KEYS") or environ.get("ENGINE_PII_INDEX_KEY"):
        raise SeedError("the seeder seals with the dev PII keys only; unset ENGINE_PII_KEYS")


# --- IDs ---------------------------------------------------------------------------------------


def seed_id(index: int, slot: int, logical_shard: int) -> int:
    """The ID in `slot` of customer `index` (see the module docstring)."""
    assert 0 <= slot < SEED_MS_PER_CUSTOMER * SEQ_PER_MS, slot
    ms = SEED_MS_FIRST + index * SEED_MS_PER_CUSTOMER + slot // SEQ_PER_MS
    return compose_id(ms, logical_shard, SEED_WORKER, slot % SEQ_PER_MS)


def check_ids_in_past(end_index: int, now_ms: int | None = None) -> None:
    """Seed IDs must lie before any ID an engine running now can issue."""
    last_ms = SEED_MS_FIRST + end_index * SEED_MS_PER_CUSTOMER + EPOCH_MS
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if last_ms >= now_ms - 86_400_000:
        raise SeedError("seed IDs would not lie in the past; use fewer customers")


@dataclass(frozen=True, slots=True)
class CustomerIds:
    index: int
    id_number: str
    logical_shard: int
    customer_id: int
    credit_line_id: int
    loan_ids: tuple[int, ...]

    def txn_id(self, loan_no: int, second: bool) -> int:
        return seed_id(self.index, _SLOT_TXN_FIRST + 2 * loan_no + second, self.logical_shard)

    def seeded(self) -> SeededCustomer:
        return SeededCustomer(
            str(self.customer_id),
            str(self.credit_line_id),
            seeded_bank_card(self.index),
            tuple(str(loan_id) for loan_id in self.loan_ids),
        )


def customer_ids(index: int, loans: int) -> CustomerIds:
    id_number = seeded_id_number(index)
    logical = logical_shard_for_id_number(id_number)
    return CustomerIds(
        index,
        id_number,
        logical,
        seed_id(index, _SLOT_CUSTOMER, logical),
        seed_id(index, _SLOT_LINE, logical),
        tuple(seed_id(index, _SLOT_LOAN_FIRST + n, logical) for n in range(loans)),
    )


# --- Rows --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ShardBatch:
    """The rows of one chunk's customers on one physical shard, by table."""

    tables: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {table: [] for table in COLUMNS}
    )
    # (code, stripe) -> [debit_fen, credit_fen] of the internal accounts' legs
    stripes: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def row_count(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


def _mask(value: str) -> str:
    """engine.security.identity's one masking rule: first 3 and last 4 kept."""
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


_DUE_COLUMN: Final = PLAN_COLUMNS.index("due_date")


@lru_cache(maxsize=PLAN_CACHE_ENTRIES_MAX)
def _plan_rows(
    amount_fen: int, months: int, method: str, start: dt.date
) -> tuple[int, dt.date, tuple[list[object], ...]]:
    """(payment_fen, maturity, the plan's column arrays) of one loan, nothing paid yet;
    cached, plans repeat a lot."""
    plan = build_plan(amount_fen, LINE_RATE_PCT, months, method, start)
    columns = installment_arrays(fresh_state(plan), ())
    return plan.payment_fen, plan.installments[-1].due_date, columns


def _start_date(today: dt.date, mixed: int, due_today: bool) -> dt.date:
    """The drawdown date: 1-27 days back, or one month back when that makes today a due date.

    Never today: reconciliation compares today's core file with today's postings,
    and core banking has no record of seeded disbursements.
    """
    if due_today:
        candidate = today.replace(day=1) - dt.timedelta(days=1)  # the previous month
        if candidate.day >= today.day:
            candidate = candidate.replace(day=today.day)
            if add_months(candidate, 1) == today:
                return candidate
    return today - dt.timedelta(days=1 + mixed % 27)


class RowMaker:
    """Turns customer indexes into rows; one per worker process (keys, caches)."""

    def __init__(
        self,
        today: dt.date,
        penalty_multiplier: Decimal,
        loans: int,
        due_today_every: int = DUE_TODAY_EVERY,
    ) -> None:
        self.today = today
        self.due_today_every = due_today_every
        self.penalty_multiplier = penalty_multiplier
        self.loans = loans
        self.expires_on = dt.date(today.year + 5, 12, 31)
        self._aead = AESGCM(DEV_PII_KEY)
        self._amount_steps = max(1, LINE_LIMIT_FEN // 2 // loans // LOAN_AMOUNT_STEP_FEN)

    def terms(self, ids: CustomerIds, loan_no: int) -> tuple[int, str, int, dt.date]:
        """(principal in fen, method, months, drawdown date) of the customer's loan
        `loan_no`: every `due_today_every`-th drawn a month back, so that its first
        monthly installment falls due today."""
        mixed = scramble(ids.index, 16 + loan_no)
        amount_fen = LOAN_AMOUNT_STEP_FEN * (1 + mixed % self._amount_steps)
        method = LOAN_METHODS[(mixed >> 8) % len(LOAN_METHODS)]
        months = LOAN_TERMS_MONTHS[(mixed >> 12) % len(LOAN_TERMS_MONTHS)]
        due_today = (ids.index + loan_no) % self.due_today_every == 0
        return amount_fen, method, months, _start_date(self.today, mixed >> 16, due_today)

    def due_today(self, ids: CustomerIds, loan_no: int) -> bool:
        """Whether the loan has an installment due today (a loan repaid at maturity
        drawn a month back has none)."""
        amount_fen, method, months, start = self.terms(ids, loan_no)
        return self.today in _plan_rows(amount_fen, months, method, start)[2][_DUE_COLUMN]

    def seal(self, plaintext: str, context: str, row: int) -> bytes:
        """engine.security.pii's blob: version || nonce || ciphertext+tag; as AAD the
        context (the column), a NUL and the id of the row that holds it."""
        nonce = os.urandom(_PII_NONCE_BYTES)
        aad = context.encode("ascii") + b"\x00" + str(row).encode("ascii")
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad)
        return bytes((DEV_PII_KEY_VERSION,)) + nonce + sealed

    @staticmethod
    def lookup_index(plaintext: str, context: str) -> bytes:
        """engine.security.pii's keyed lookup hash: HMAC(index key, context NUL value)."""
        message = context.encode("ascii") + b"\x00" + plaintext.encode("ascii")
        return hmac.new(DEV_INDEX_KEY, message, hashlib.sha256).digest()

    @classmethod
    def id_number_index(cls, id_number: str) -> bytes:
        return cls.lookup_index(id_number, "id_number")

    def add_customer(self, batch: ShardBatch, ids: CustomerIds) -> None:
        """Every row of one customer into `batch`."""
        index, id_number = ids.index, ids.id_number
        card, phone = seeded_bank_card(index), seeded_phone(index)
        birth = dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
        customer_id = ids.customer_id
        batch.tables["customer"].append(
            (customer_id, TENANT, self.seal(seeded_name(index), "name", customer_id),
             self.seal(id_number, "id_number", customer_id), self.id_number_index(id_number),
             self.seal(phone, "phone", customer_id), self.seal(card, "bank_card", customer_id),
             _mask(id_number), _mask(phone), _mask(card), birth, id_number[:6])
        )  # fmt: skip
        batch.tables["customer_card"].append(
            (customer_id, self.lookup_index(card, "bank_card"), _mask(card), "registered", False)
        )
        used_fen = sum(self._add_loan(batch, ids, n, card) for n in range(len(ids.loan_ids)))
        assert used_fen <= LINE_LIMIT_FEN // 2, used_fen
        batch.tables["credit_line"].append(
            (ids.credit_line_id, ids.customer_id, TENANT, PRODUCT, LINE_LIMIT_FEN, used_fen,
             LINE_RATE_PCT, list(LINE_METHODS), LINE_MAX_TERM_MONTHS, self.expires_on)
        )  # fmt: skip

    def _add_loan(self, batch: ShardBatch, ids: CustomerIds, loan_no: int, card: str) -> int:
        """The loan, its plan and its two postings; returns the principal."""
        loan_id, customer_id = ids.loan_ids[loan_no], ids.customer_id
        amount_fen, method, months, start = self.terms(ids, loan_no)
        payment_fen, maturity, plan = _plan_rows(amount_fen, months, method, start)
        at = dt.datetime.combine(start, dt.time(9, 30), _CHINA)
        batch.tables["loan"].append(
            (loan_id, customer_id, ids.credit_line_id, TENANT, CHANNEL, PRODUCT,
             f"JJ{start:%Y%m%d}{loan_id:019d}", amount_fen, amount_fen, LINE_RATE_PCT,
             self.penalty_multiplier, method, months, start, maturity, "disbursed",
             self.seal(card, "bank_card", loan_id), _mask(card), payment_fen, at, at)
        )  # fmt: skip
        batch.tables["loan_plan"].append((loan_id, customer_id, *plan))
        book = (
            ("drawdown", Code.LOAN_PRINCIPAL, loan_id, Code.DISBURSEMENT_CLEARING, None),
            ("disbursement", Code.DISBURSEMENT_CLEARING, None, Code.CORE_SETTLEMENT, None),
        )
        for second, (kind, debit, debit_owner, credit, credit_owner) in enumerate(book):
            posting = Posting(
                txn_id=ids.txn_id(loan_no, bool(second)),
                customer_id=customer_id,
                kind=kind,
                ref_id=loan_id,
                business_date=start,
                legs=(Leg(debit, debit_owner, amount_fen), Leg(credit, credit_owner, -amount_fen)),
            )
            _add_posting(batch, posting, at)
        return amount_fen


def _add_posting(batch: ShardBatch, posting: Posting, at: dt.datetime) -> None:
    """The posting's txn and legs rows, as `ledger.store.posting_args` lays them out
    (the engine's own posting SQL binds the same arguments); loan accounts as new
    rows, internal legs into the stripes' totals."""
    args = posting_args(posting)
    txn_id, customer_id, kind, ref_id, day = args[:5]
    codes = cast("list[str]", args[5])
    owners = cast("list[int]", args[6])
    customers = cast("list[int | None]", args[7])
    amounts = cast("list[int]", args[8])
    batch.tables["ledger_txn"].append((txn_id, customer_id, kind, ref_id, day, at))
    legs, accounts = batch.tables["ledger_leg"], batch.tables["ledger_account"]
    for leg_no, (code, owner, leg_customer, amount) in enumerate(
        zip(codes, owners, customers, amounts, strict=True), start=1
    ):
        legs.append((txn_id, leg_no, code, owner, leg_customer, amount))
        debit, credit = max(amount, 0), max(-amount, 0)
        if leg_customer is None:
            totals = batch.stripes.setdefault((code, owner), [0, 0])
            totals[0] += debit
            totals[1] += credit
        else:
            # A seeded loan account is touched by exactly one leg: its drawdown.
            accounts.append((code, owner, leg_customer, debit, credit))


# --- Writing -----------------------------------------------------------------------------------


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10, command_timeout=COMMAND_TIMEOUT_S)


async def present_customers(conn: asyncpg.Connection, customer_ids: list[int]) -> set[int]:
    """Which of these customers a shard holds already (each with all its rows: one transaction)."""
    if not customer_ids:
        return set()
    rows = await conn.fetch(
        "SELECT customer_id FROM customer WHERE customer_id = ANY($1::bigint[])", customer_ids
    )
    return {int(row["customer_id"]) for row in rows}


async def write_batch(conn: asyncpg.Connection, batch: ShardBatch, *, row_triggers: bool) -> None:
    """One transaction: every table by COPY, then the stripes' totals (their locks held briefly).

    `row_triggers`: the ledger's deferred pair-check trigger and the foreign keys
    check every row at commit, as for the engine's own postings. Without it
    (the default; superuser only) the session runs with `session_replication_role
    = replica`, which skips every row trigger, and the same transaction checks
    the pair rule and the legs' accounts once for the whole batch instead
    (`_BATCH_CHECKS_SQL`), about four times cheaper on the database side; the
    other references hold by construction (every row of a customer derives from
    one `CustomerIds`). `synchronous_commit = off` either way: a crash loses at
    most the last chunks, which a re-run writes again.
    """
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        if not row_triggers:
            await conn.execute("SET LOCAL session_replication_role = replica")
        for table, columns in COLUMNS.items():
            rows = batch.tables[table]
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=columns)
        if not row_triggers and batch.tables["loan"]:
            # What the loan table's statement trigger writes (ledger 0023), which the
            # replica role skips: every loan's row of the accrual sub-ledger.
            await conn.execute(
                """INSERT INTO loan_accrual (loan_id, customer_id)
                   SELECT * FROM unnest($1::bigint[], $2::bigint[]) ORDER BY 1""",
                [row[0] for row in batch.tables["loan"]],
                [row[1] for row in batch.tables["loan"]],
            )
        if not row_triggers and batch.tables["ledger_txn"]:
            txn_ids = [row[0] for row in batch.tables["ledger_txn"]]
            for what, sql in _BATCH_CHECKS_SQL.items():
                bad = await conn.fetchval(sql, txn_ids)
                if bad:
                    raise SeedError(f"{bad} ledger transactions of a batch fail the check: {what}")
        keys = sorted(batch.stripes)
        if keys:
            await conn.execute(
                _STRIPES_SQL,
                [code for code, _ in keys],
                [owner for _, owner in keys],
                [batch.stripes[key][0] for key in keys],
                [batch.stripes[key][1] for key in keys],
            )


@dataclass(frozen=True, slots=True)
class ChunkResult:
    customers_new: int
    customers_present: int
    rows: int
    seeded: list[tuple[str, str, str, str, str]]  # client_data.SEEDED_HEADER


class ChunkSeeder:
    """Seeds chunks of customer indexes over one connection per physical shard."""

    def __init__(
        self,
        config: SeedConfig,
        maker: RowMaker,
        conns: Mapping[str, asyncpg.Connection],
    ) -> None:
        self.config = config
        self.maker = maker
        self.conns = conns
        self.shard_map = ShardMap(config.shards)

    async def seed(self, first: int, end: int) -> ChunkResult:
        groups: dict[str, list[CustomerIds]] = {shard.name: [] for shard in self.config.shards}
        for index in range(first, end):
            ids = customer_ids(index, self.config.loans_per_customer)
            groups[self.shard_map.physical_for(ids.logical_shard).name].append(ids)
        names = list(groups)
        found = await asyncio.gather(
            *(present_customers(self.conns[n], [i.customer_id for i in groups[n]]) for n in names)
        )
        batches: dict[str, ShardBatch] = {}
        new = 0
        for name, present in zip(names, found, strict=True):
            batch = batches[name] = ShardBatch()
            for ids in groups[name]:
                if ids.customer_id not in present:
                    self.maker.add_customer(batch, ids)
                    new += 1
        await asyncio.gather(
            *(
                write_batch(self.conns[n], b, row_triggers=self.config.row_triggers)
                for n, b in batches.items()
                if b.row_count()
            )
        )
        seeded = [self._seeded_row(ids) for group in groups.values() for ids in group]
        rows = sum(b.row_count() for b in batches.values())
        return ChunkResult(new, end - first - new, rows, seeded)

    def _seeded_row(self, ids: CustomerIds) -> tuple[str, str, str, str, str]:
        """The customer's line of the seeded file (client_data.SEEDED_HEADER)."""
        s = ids.seeded()
        due = (loan for n, loan in enumerate(s.loan_ids) if self.maker.due_today(ids, n))
        return (s.customer_id, s.credit_line_id, s.bank_card, " ".join(s.loan_ids), " ".join(due))


# --- Worker processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerJob:
    config: SeedConfig
    today: dt.date
    penalty_multiplier: Decimal
    chunk_starts: tuple[int, ...]


def _worker_main(job: WorkerJob, out: Any) -> None:
    """A worker process: seeds its chunks, reports each on `out`, then ("done",).

    Ctrl-C is the parent's to handle: it terminates the workers, and a chunk's
    open transactions roll back with their connections.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_worker(job, out))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from exc
    out.put(("done",))


async def _worker(job: WorkerJob, out: Any) -> None:
    config = job.config
    maker = RowMaker(
        job.today, job.penalty_multiplier, config.loans_per_customer, config.due_today_every
    )
    conns = {shard.name: await connect(shard.dsn) for shard in config.shards}
    try:
        seeder = ChunkSeeder(config, maker, conns)
        for first in job.chunk_starts:
            result = await seeder.seed(first, min(first + config.chunk_customers, config.end))
            out.put(("chunk", result))
    finally:
        for conn in conns.values():
            await conn.close()


async def read_reference(config: SeedConfig) -> tuple[dt.date, Decimal]:
    """The business date and the product's penalty multiplier; checks the product fits."""
    conn = await connect(config.control_dsn)
    try:
        today = await conn.fetchval("SELECT business_date FROM business_clock")
        product = await conn.fetchrow(
            """SELECT repayment_methods, term_months_max, line_limit_max_fen,
                      annual_rate_pct_min, annual_rate_pct_max, penalty_multiplier
               FROM product WHERE product_code = $1 AND tenant_id = $2""",
            PRODUCT,
            TENANT,
        )
    finally:
        await conn.close()
    if today is None or product is None:
        raise SeedError("no business clock or no demo-credit product: run `engine demo load`")
    fits = (
        set(LINE_METHODS) <= set(product["repayment_methods"])
        and product["term_months_max"] >= LINE_MAX_TERM_MONTHS
        and product["line_limit_max_fen"] >= LINE_LIMIT_FEN
        and product["annual_rate_pct_min"] <= LINE_RATE_PCT <= product["annual_rate_pct_max"]
    )
    if not fits:
        raise SeedError("the demo-credit product no longer fits the seeded lines")
    return today, Decimal(product["penalty_multiplier"])


async def analyze(config: SeedConfig) -> None:
    """Fresh planner statistics on every shard after a bulk load."""

    async def one(shard: PhysicalShard) -> None:
        conn = await connect(shard.dsn)
        try:
            await conn.execute(_ANALYZE_SQL)
        finally:
            await conn.close()

    await asyncio.gather(*(one(shard) for shard in config.shards))


# --- The run -----------------------------------------------------------------------------------


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, else a line a while."""

    def __init__(self, total: int, stream: Any = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.last_shown = 0.0
        self.customers = self.new = self.rows = 0
        self.shown_customers = -1

    def add(self, result: ChunkResult) -> None:
        self.customers += result.customers_new + result.customers_present
        self.new += result.customers_new
        self.rows += result.rows

    def elapsed_s(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def show(self, *, force: bool = False) -> None:
        now = time.monotonic()
        every_s = PROGRESS_EVERY_S if self.tty else PROGRESS_EVERY_S * 5
        if self.customers == self.shown_customers or (
            not force and now - self.last_shown < every_s
        ):
            return
        self.last_shown, self.shown_customers = now, self.customers
        elapsed = self.elapsed_s()
        done = self.customers / self.total
        rate = self.customers / elapsed
        eta_s = (self.total - self.customers) / rate if rate else 0.0
        width = 30
        bar = "#" * int(done * width) + "-" * (width - int(done * width))
        text = (
            f"seed [{bar}] {done:6.1%} {self.customers}/{self.total} customers "
            f"({self.new} new) {rate:,.0f} customers/s {self.rows / elapsed:,.0f} rows/s "
            f"ETA {eta_s:,.0f} s"
        )
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()


@dataclass(frozen=True)
class SeedReport:
    customers_new: int
    customers_present: int
    rows: int
    elapsed_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s


def run_seed(config: SeedConfig, stream: Any = sys.stderr) -> SeedReport:
    """Seeds the customers of `config` with its worker processes; writes the seeded file."""
    check_ids_in_past(config.end)
    today, multiplier = asyncio.run(read_reference(config))
    starts = tuple(range(config.start, config.end, config.chunk_customers))
    context = multiprocessing.get_context("spawn")
    out = context.Queue(maxsize=64)
    workers = min(config.workers, len(starts))
    processes = [
        context.Process(
            target=_worker_main,
            args=(WorkerJob(config, today, multiplier, starts[w::workers]), out),
            name=f"seed-{w}",
            daemon=True,
        )
        for w in range(workers)
    ]
    progress = Progress(config.customers, stream)
    part = config.seeded_file.with_name(config.seeded_file.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    for process in processes:
        process.start()
    try:
        with part.open("w", newline="", encoding="ascii") as handle:
            writer = csv.writer(handle)
            writer.writerow(SEEDED_HEADER)
            _collect(processes, out, progress, writer)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)
    part.replace(config.seeded_file)
    progress.show(force=True)
    if progress.tty:
        stream.write("\n")
    if config.analyze:
        asyncio.run(analyze(config))
    return SeedReport(
        progress.new, progress.customers - progress.new, progress.rows, progress.elapsed_s()
    )


def _collect(
    processes: Sequence[multiprocessing.process.BaseProcess],
    out: Any,
    progress: Progress,
    writer: Any,
) -> None:
    """Reads the workers' reports until every worker is done; raises on the first error."""
    running = len(processes)
    while running:
        try:
            message = out.get(timeout=PROGRESS_EVERY_S)
        except queue.Empty:
            dead = [p.name for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise SeedError(f"seed worker {dead[0]} died") from None
            progress.show()
            continue
        if message[0] == "chunk":
            result: ChunkResult = message[1]
            writer.writerows(result.seeded)
            progress.add(result)
            progress.show()
        elif message[0] == "error":
            raise SeedError(f"a seed worker failed: {message[1]}")
        else:
            running -= 1

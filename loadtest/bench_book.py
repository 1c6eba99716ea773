"""PostgreSQL's own CPU for booking drawdowns (`book_drawdowns`), nothing else running.

    python -m loadtest.bench_book [--calls N] [--rounds R] [--migrations DIR] [--batch K]

A throw-away database on the stack's first server gets the shard schema (the
migrations in DIR; by default this checkout's), the chart, and K customers with a
line each. One client then books 12-month drawdowns, one statement and one commit
each call as the engine does: one drawdown per `book_drawdowns` call, or with
`--batch K` K at a time (group booking, ledger migrations 0010 and 0011), and reads
the server process's CPU time (/proc/PID/stat) around each round: CPU per booking and
bookings/s.

The whole stack's benchmark (`loadtest.bench_api`) shares two cores among ten
processes and moves by ±10 % from run to run; this isolates the database's part of
the request path, so that two schemas can be compared (`--migrations` of an older
checkout) on the same server, minutes apart.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import secrets
import time
from decimal import Decimal
from pathlib import Path
from typing import Final

import asyncpg
import msgspec

from engine.migrate import SHARD_MIGRATIONS
from engine.services.booking_batch import BATCH_SQL, batch_args, book_alone
from engine.services.loan_store import installment_arrays
from ledger.chart import Code
from ledger.overdue import fresh_state
from ledger.postings import Leg, Posting
from ledger.schedule import build_plan
from ledger.store import ensure_chart, posting_args
from loadtest.seed import control_dsn_from_env
from sharding.migrations import apply_migrations, load_migrations

RATE_PCT: Final = Decimal("7.2")
PRINCIPAL_FEN: Final = 1_200_000
TODAY: Final = dt.date(2026, 11, 30)
WARM_UP_CALLS: Final = 200
_TICKS_S: Final = os.sysconf("SC_CLK_TCK")
# Customers 1..$1, each with the line of the same number.
_SETUP: Final = [
    """INSERT INTO customer (customer_id, tenant_id, name_ciphertext, id_number_ciphertext,
           id_number_index, phone_ciphertext, bank_card_ciphertext, id_number_masked,
           phone_masked, bank_card_masked, birth_date)
       SELECT n, 'demo', '', '', int8send(n), '', '', '', '', '', '1990-01-01'
       FROM generate_series(1, $1::bigint) AS n""",
    """INSERT INTO credit_line (credit_line_id, customer_id, tenant_id, product_code, limit_fen,
           annual_rate_pct, repayment_methods, max_term_months, expires_on)
       SELECT n, n, 'demo', 'demo-credit', 9000000000000000, 7.2, '{equal_installment}', 36,
           '2030-01-01'
       FROM generate_series(1, $1::bigint) AS n""",
]


async def prepare(conn: asyncpg.Connection, migrations: Path, lines: int) -> None:
    """An empty database made a shard (the migrations in `migrations`, the chart) with
    customers and lines 1..lines (`booking_args`' line_id and customer_id)."""
    await apply_migrations(conn, load_migrations(migrations))
    await ensure_chart(conn)
    for sql in _SETUP:
        await conn.execute(sql, lines)


def booking_args(n: int, *, line_id: int = 1, customer_id: int | None = None) -> tuple[object, ...]:
    """`book_drawdown`'s arguments for the n-th booking (ids from n; as the engine lays
    them out in engine/services/drawdowns.py), on line `line_id` of its own customer
    (`prepare` gives line k to customer k) unless another customer is named."""
    customer_id = line_id if customer_id is None else customer_id
    loan_id, txn_id, outbox_id = 3 * n + 1, 3 * n + 2, 3 * n + 3
    plan = build_plan(PRINCIPAL_FEN, RATE_PCT, 12, "equal_installment", TODAY)
    legs = (
        Leg(Code.LOAN_PRINCIPAL, loan_id, PRINCIPAL_FEN),
        Leg(Code.DISBURSEMENT_CLEARING, None, -PRINCIPAL_FEN),
    )
    posting = Posting(txn_id, customer_id, "drawdown", loan_id, TODAY, legs)
    body = b'{"loan_id": "%d", "status": "disbursing"}' % loan_id
    return (
        "bench", f"key-{n}", hashlib.sha256(body).digest(), 201, body,
        line_id, RATE_PCT, TODAY, None, None,
        loan_id, customer_id, "demo", "bench", "demo-credit", f"R{loan_id}", PRINCIPAL_FEN,
        Decimal("1.5"), "equal_installment", 12, 0, TODAY, plan.installments[-1].due_date,
        secrets.token_bytes(48), "6222********0128", plan.payment_fen,
        *installment_arrays(fresh_state(plan), ()),
        txn_id, *posting_args(posting)[5:],
        outbox_id, msgspec.json.encode({"reference": f"D{loan_id}"}).decode(),
        f"nonce-{n:016d}",
    )  # fmt: skip


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_S  # utime + stime


async def _book(conn: asyncpg.Connection, work: list[tuple[object, ...]], batch: int) -> None:
    """Book `work`: one drawdown per call (as the engine's locked path), or calls of `batch`."""
    if batch == 1:
        for args in work:
            outcome = await book_alone(conn, args)
            assert outcome == "booked", outcome
        return
    for start in range(0, len(work), batch):
        chunk = work[start : start + batch]
        outcomes = await conn.fetchval(BATCH_SQL, *batch_args(chunk))
        assert outcomes == ["booked"] * len(chunk), outcomes


def _work(first: int, count: int, batch: int) -> list[tuple[object, ...]]:
    """Bookings first..first+count-1; a batch's drawdowns on lines 1..batch."""
    return [booking_args(n, line_id=n % batch + 1) for n in range(first, first + count)]


async def bench(dsn: str, migrations: Path, calls: int, rounds: int, batch: int = 1) -> None:
    """Print one line per round; `dsn` names any database of the server to use."""
    base, _ = dsn.rsplit("/", 1)
    name = f"bench_book_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base + "/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(f"{base}/{name}")
        try:
            await prepare(conn, migrations, batch)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            done = min(WARM_UP_CALLS, calls) // batch * batch
            # the session's plans and caches, before measuring
            await _book(conn, _work(0, done, batch), batch)
            for round_no in range(1, rounds + 1):
                work = _work(done, calls, batch)
                done += calls
                cpu0, t0 = _cpu_s(pid), time.perf_counter()
                await _book(conn, work, batch)
                cpu, wall = _cpu_s(pid) - cpu0, time.perf_counter() - t0
                print(
                    f"round {round_no}: {calls / wall:,.0f} bookings/s, PostgreSQL CPU "
                    f"{1000 * cpu / calls:.3f} ms per booking, {batch} per call ({migrations})",
                    flush=True,
                )
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--migrations", type=Path, default=SHARD_MIGRATIONS)
    parser.add_argument("--batch", type=int, default=1, help="drawdowns per book_drawdowns call")
    args = parser.parse_args()
    dsn = control_dsn_from_env(os.environ)  # the first server's
    asyncio.run(bench(dsn, args.migrations, args.calls, args.rounds, args.batch))


if __name__ == "__main__":
    main()

"""PostgreSQL's own CPU for booking one drawdown (`book_drawdown`), nothing else running.

    python -m loadtest.bench_book [--calls N] [--rounds R] [--migrations DIR]

A throw-away database on the stack's first server gets the shard schema (the
migrations in DIR; by default this checkout's), the chart, one customer and one
line. One client then books 12-month drawdowns through `book_drawdown`, one
statement and one commit each as the engine does, and reads the server process's
CPU time (/proc/PID/stat) around each round: CPU per booking and bookings/s.

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
_SETUP: Final = [
    """INSERT INTO customer (customer_id, tenant_id, name_ciphertext, id_number_ciphertext,
           id_number_index, phone_ciphertext, bank_card_ciphertext, id_number_masked,
           phone_masked, bank_card_masked, birth_date)
       VALUES (1, 'demo', '', '', '\\x01', '', '', '', '', '', '1990-01-01')""",
    """INSERT INTO credit_line (credit_line_id, customer_id, tenant_id, product_code, limit_fen,
           annual_rate_pct, repayment_methods, max_term_months, expires_on)
       VALUES (1, 1, 'demo', 'demo-credit', 9000000000000000, 7.2, '{equal_installment}', 36,
           '2030-01-01')""",
]
_BOOK_SQL: Final = "SELECT book_drawdown({})".format(", ".join(f"${n}" for n in range(1, 45)))


def _args(n: int) -> tuple[object, ...]:
    """`book_drawdown`'s arguments for the n-th booking (ids from n; as the engine lays
    them out in engine/services/drawdowns.py)."""
    loan_id, txn_id, outbox_id = 3 * n + 1, 3 * n + 2, 3 * n + 3
    plan = build_plan(PRINCIPAL_FEN, RATE_PCT, 12, "equal_installment", TODAY)
    legs = (
        Leg(Code.LOAN_PRINCIPAL, loan_id, PRINCIPAL_FEN),
        Leg(Code.DISBURSEMENT_CLEARING, None, -PRINCIPAL_FEN),
    )
    posting = Posting(txn_id, 1, "drawdown", loan_id, TODAY, legs)
    body = b'{"loan_id": "%d", "status": "disbursing"}' % loan_id
    return (
        "bench", f"key-{n}", hashlib.sha256(body).digest(), 201, body,
        1, RATE_PCT, TODAY, None, None,
        loan_id, 1, "demo", "bench", "demo-credit", f"R{loan_id}", PRINCIPAL_FEN,
        Decimal("1.5"), "equal_installment", 12, 0, TODAY, plan.installments[-1].due_date,
        secrets.token_bytes(48), "6222********0128", plan.payment_fen,
        *installment_arrays(fresh_state(plan), ()),
        txn_id, *posting_args(posting)[5:],
        outbox_id, msgspec.json.encode({"reference": f"D{loan_id}"}).decode(),
    )  # fmt: skip


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_S  # utime + stime


async def bench(dsn: str, migrations: Path, calls: int, rounds: int) -> None:
    """Print one line per round; `dsn` names any database of the server to use."""
    base, _ = dsn.rsplit("/", 1)
    name = f"bench_book_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base + "/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(f"{base}/{name}")
        try:
            await apply_migrations(conn, load_migrations(migrations))
            await ensure_chart(conn)
            for sql in _SETUP:
                await conn.execute(sql)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            done = min(WARM_UP_CALLS, calls)
            for n in range(done):  # the session's plans and caches, before measuring
                assert await conn.fetchval(_BOOK_SQL, *_args(n)) == "booked"
            for round_no in range(1, rounds + 1):
                work = [_args(n) for n in range(done, done + calls)]
                done += calls
                cpu0, t0 = _cpu_s(pid), time.perf_counter()
                for args in work:
                    outcome = await conn.fetchval(_BOOK_SQL, *args)
                    assert outcome == "booked", outcome
                cpu, wall = _cpu_s(pid) - cpu0, time.perf_counter() - t0
                print(
                    f"round {round_no}: {calls / wall:,.0f} bookings/s, PostgreSQL CPU "
                    f"{1000 * cpu / calls:.3f} ms per booking ({migrations})",
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
    args = parser.parse_args()
    dsn = control_dsn_from_env(os.environ)  # the first server's
    asyncio.run(bench(dsn, args.migrations, args.calls, args.rounds))


if __name__ == "__main__":
    main()

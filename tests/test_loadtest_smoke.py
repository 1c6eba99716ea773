"""The load test's own pieces, against the suite's stack and engine.

- `loadtest.signing` (written from API.md, no engine import) signs exactly as
  `engine.security.signing` verifies.
- The seeder writes 50 customers with 2 loans each straight into the shards:
  the deep trial balance stays balanced, the customers' loans are readable and
  their lines take drawdowns over the API, and a second run skips them all.
- A 20-second headless Locust run against the suite's engine, gating on
  failures and on the system time of its originations, exits 0 with originations in it.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from engine.security import signing as engine_signing
from engine.security.identity import parse_bank_card, parse_id_number
from engine.settings import Settings
from ledger.store import trial_balance
from loadtest import signing as loadtest_signing
from loadtest.client_data import (
    luhn_check_digit,
    read_seeded,
    seeded_bank_card,
    seeded_id_number,
)
from tests.api_client import ApiClient
from tests.conftest import ROOT, EngineProcess, run_cli

SEED_CUSTOMERS = 50
SEED_LOANS = 2

_VECTORS = [
    ("demo-secret", "POST", "/v1/drawdowns", "1700000000", "abcdefghijklmnop", b'{"a": 1}'),
    ("demo-secret", "GET", "/v1/loans/123?on=2026-01-31", "1", "x" * 64, b""),
    ("秘密-secret", "POST", "/v1/repayments", "1999999999", "A-b_C-d_E-f_G-h_", "还款".encode()),
]


@pytest.mark.parametrize(("secret", "method", "path", "timestamp", "nonce", "body"), _VECTORS)
def test_signature_matches_engine(
    secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes
) -> None:
    key = "" if method == "GET" else "key-" + nonce[:8]
    ours = loadtest_signing.signature(secret, method, path, timestamp, nonce, body, "demo", key)
    assert ours == engine_signing.sign(
        secret, method, path, timestamp, nonce, body, channel_id="demo", idempotency_key=key
    )


def test_auth_headers_verify_in_engine() -> None:
    body = b'{"credit_line_id": "1"}'
    headers = loadtest_signing.auth_headers(
        "demo", "demo-secret", "POST", "/v1/drawdowns", body, idempotency_key="k-1"
    )
    assert engine_signing.NONCE_RE.fullmatch(headers["X-Nonce"])
    assert engine_signing.verify(
        "demo-secret",
        "POST",
        "/v1/drawdowns",
        headers["X-Timestamp"],
        headers["X-Nonce"],
        body,
        headers["X-Signature"],
        channel_id="demo",
        idempotency_key=headers["Idempotency-Key"],
    )


def test_seeded_identities_are_valid() -> None:
    numbers = {seeded_id_number(i) for i in range(0, 3_000_000, 997)}
    assert len(numbers) == len(range(0, 3_000_000, 997))
    for index in (0, 1, 999, 1000, 123_456, 99_999_999):
        parse_id_number(seeded_id_number(index), today=dt.date(2026, 1, 1))
        card = seeded_bank_card(index)
        assert parse_bank_card(card) == card
        assert luhn_check_digit(card[:-1]) == card[-1]


def _seed_env(settings: Settings) -> dict[str, str]:
    shard_dsns = ",".join(f"{shard.name}={shard.dsn}" for shard in settings.shards)
    return dict(os.environ) | {
        "ENGINE_CONTROL_DSN": settings.control_dsn,
        "ENGINE_SHARD_DSNS": shard_dsns,
    }


def _seed(settings: Settings, seeded_file: Path, start: int) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "seed", "--customers", str(SEED_CUSTOMERS),
         "--loans-per-customer", str(SEED_LOANS), "--start", str(start), "--workers", "2",
         "--chunk", "20", "--seeded-file", str(seeded_file)],
        cwd=ROOT, env=_seed_env(settings), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def seeded_file(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 fresh customers (a random index range far from what people seed by hand)."""
    path = tmp_path_factory.mktemp("loadtest") / "seeded.csv"
    start = 50_000_000 + secrets.randbelow(49_000_000)
    out = _seed(settings, path, start)
    assert f"{SEED_CUSTOMERS} customers written, 0 already present" in out, out
    again = _seed(settings, path, start)
    assert f"0 customers written, {SEED_CUSTOMERS} already present" in again, again
    return path


async def test_seeded_ledger_stays_balanced(seeded_file: Path, settings: Settings) -> None:
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            result = await trial_balance(conn, deep=True)
        finally:
            await conn.close()
        assert result.balanced, (shard.name, result)
    done = run_cli("ledger", "trial-balance", "--deep")
    assert done.returncode == 0, done.stdout + done.stderr


async def test_seeded_customers_work_over_the_api(
    seeded_file: Path, api: ApiClient, settings: Settings
) -> None:
    customers = read_seeded(seeded_file)
    assert len(customers) == SEED_CUSTOMERS
    with seeded_file.open() as handle:
        assert next(csv.reader(handle)) == [
            "customer_id",
            "credit_line_id",
            "bank_card",
            "loan_ids",
            "due_today",
        ]
    # The file says which loans have an installment due on the seeding's date (every
    # eighth by default): the benchmark's prepayments keep off those (ARREARS_FIRST).
    # (None on a 29th-31st that the month before lacks, or for a loan repaid at maturity.)
    due = [loan for c in customers for loan in c.due_today]
    assert all(set(c.due_today) <= set(c.loan_ids) for c in customers)
    assert len(due) <= SEED_CUSTOMERS * SEED_LOANS // 8 + 1, len(due)
    not_due = [loan for c in customers[:8] for loan in c.not_due_today() if loan not in due]
    first_due = {}
    for loan_id in due[:3] + not_due[:3]:
        schedule = await api.get(f"/v1/loans/{loan_id}/schedule")
        first_due[loan_id] = min(i["due_date"] for i in schedule.json["installments"])
    today = {first_due[loan_id] for loan_id in due[:3]}
    assert len(today) <= 1, first_due  # the same date for every due loan
    assert all(first_due[loan_id] > min(today, default="") for loan_id in not_due[:3])
    for customer in customers[:5]:
        reply = await api.get(f"/v1/customers/{customer.customer_id}/loans")
        assert reply.status == 200, reply
        loans = {loan["loan_id"]: loan for loan in reply.json["loans"]}
        assert set(loans) == set(customer.loan_ids)
        assert {loan["status"] for loan in loans.values()} == {"disbursed"}
        schedule = await api.get(f"/v1/loans/{customer.loan_ids[0]}/schedule")
        assert schedule.status == 200 and schedule.json["installments"], schedule
        line = await api.get(f"/v1/credit-lines/{customer.credit_line_id}")
        used_fen = sum(int(loan["principal"].replace(".", "")) for loan in loans.values())
        assert int(line.json["used"].replace(".", "")) == used_fen
    # Seeded inside the demo bank's region (1101), the region written as registration
    # writes it: the regional rule at drawdown sees them as the bank's own customers.
    regions = []
    for shard in settings.shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            regions += await conn.fetch(
                "SELECT id_region FROM customer WHERE customer_id = ANY($1::bigint[])",
                [int(c.customer_id) for c in customers],
            )
        finally:
            await conn.close()
    assert len(regions) == SEED_CUSTOMERS
    assert all(r["id_region"].startswith("1101") for r in regions), regions[:3]
    drawn = await api.drawdown(
        customers[0].credit_line_id, "100.00", disburse_to=customers[0].bank_card
    )
    assert drawn.status == 201, drawn


def test_locust_smoke(seeded_file: Path, engine: EngineProcess, tmp_path: Path) -> None:
    env = dict(os.environ) | {
        "LOADTEST_SEEDED": str(seeded_file),
        "LOADTEST_SLO_GATES": "failures,system",
        "LOADTEST_SMS_URL": engine.fakes.sms.base_url,
    }
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "locust"), "-f", "loadtest/locustfile.py", "--headless",
         "-u", "10", "-r", "5", "-t", "20s", "--host", engine.base_url, "--only-summary",
         "--csv", str(tmp_path / "smoke")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (tmp_path / "smoke_stats.csv").open() as handle:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    assert int(rows[("POST", "/v1/drawdowns")]["Request Count"]) > 0, rows
    originations = rows[("SYSTEM", "application to money (system time)")]
    assert int(originations["Request Count"]) > 0 and originations["Failure Count"] == "0", rows

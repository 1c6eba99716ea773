"""Run last (file order): what must hold after the whole suite.

- No response body and no log line of any process this session started (engines,
  relays, the fakes, schedulers: conftest.STARTED_LOGS, whichever tests ran) holds a
  full ID number, card or phone that the session sent; no engine or relay log holds any
  run of 11+ digits (tests/battery.pii_problems). Run alone, the scan has traffic of its
  own to look at: a customer, a loan paid to the card, a repayment debiting it.
- The trial balance is zero on every shard, account totals equal their legs.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from engine.settings import Settings
from ledger.store import trial_balance
from tests import books
from tests.api_client import BODIES_SEEN, PERSONAL_SENT, ApiClient, new_bank_card, new_phone
from tests.battery import pii_problems
from tests.conftest import STARTED_LOGS, EngineProcess, run_cli
from tests.waiting import eventually


async def test_no_full_personal_number_in_bodies_or_logs(
    api: ApiClient, engine: EngineProcess, tmp_path: Path
) -> None:
    card, phone = new_bank_card(), new_phone()
    customer_id = await api.customer(bank_card=card, phone=phone)
    line_id = await api.line(customer_id)
    loan = await api.disbursed_loan(line_id, "500.00", disburse_to=card)
    body = {"customer_id": customer_id, "debit_from": card,
            "items": [{"loan_id": loan["loan_id"], "mode": "payoff"}]}  # fmt: skip
    paid = await api.settled_repayment(await api.post("/v1/repayments", body))
    assert paid.status == 201 and paid.json["status"] == "succeeded", paid
    assert {card, phone} <= PERSONAL_SENT and BODIES_SEEN
    assert engine.relay is not None
    logs = dict(STARTED_LOGS)
    assert {engine.log_path, engine.relay.log_path, engine.fakes.core.log_path,
            engine.fakes.sms.log_path} <= set(logs)  # fmt: skip
    sent = await eventually(lambda: _sms_count(api, engine, phone), lambda n: n >= 2)
    assert sent >= 2  # the drawdown's and the repayment's SMS went to the phone
    # The scan finds a number in clear where there is one (it is not vacuous) ...
    planted = tmp_path / "test-engine-planted.log"
    planted.write_bytes(b'{"msg": "oops", "card": "' + card.encode() + b'"}\n')
    assert pii_problems({planted: 0}, bodies=[]) != []
    # ... and there is none in what this session's processes wrote, nor in any answer.
    assert pii_problems(logs) == []


async def _sms_count(api: ApiClient, engine: EngineProcess, phone: str) -> int:
    """Messages the gateway took for `phone` (it keeps the number masked)."""
    masked = f"{phone[:3]}****{phone[-4:]}"
    async with api.session.get(f"{engine.fakes.sms.base_url}/fake/messages") as resp:
        messages = await resp.json()
    return sum(m["phone_masked"] == masked for m in messages)


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

"""An engine worker killed with SIGKILL during a burst of drawdowns: the kill lands
while requests are in flight (some are cut off, no answer), every drawdown answered 201
exists exactly once, retries with the same key never make a second loan, the line holds
exactly the loans' principal and the ledger balances."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest

from engine.settings import Settings
from ledger.store import trial_balance
from tests.api_client import ApiClient, new_bank_card
from tests.battery import IN_FLIGHT, Op, burst, retry_until_final
from tests.conftest import EngineProcess, Fakes
from tests.money_checks import loan_books, shard_of
from tests.waiting import eventually

BURST = 80


@pytest.fixture
def own_engine(fakes: Fakes) -> Iterator[EngineProcess]:
    proc = EngineProcess(fakes, workers=2, relay=False)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _worker_pids(master_pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in out.stdout.split()]


async def test_worker_killed_mid_burst(
    own_engine: EngineProcess, http: aiohttp.ClientSession, settings: Settings
) -> None:
    api = ApiClient(http, own_engine.base_url)
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id, limit="300000.00")
    body = {"credit_line_id": line_id, "amount": "100.00", "term_months": 12,
            "repayment_method": "equal_installment", "disburse_to": card}  # fmt: skip
    ops = [Op("/v1/drawdowns", dict(body)) for _ in range(BURST)]
    victims = _worker_pids(own_engine.proc.pid)
    assert len(victims) == 2
    load = asyncio.ensure_future(burst(api, ops, concurrency=BURST))

    # The kill lands once the workers are answering (the first answers are in) and most
    # requests are still in flight: sent, and not answered.
    def progress() -> tuple[int, int]:
        return sum(op.first is not None for op in ops), IN_FLIGHT[0]

    await eventually(lambda: asyncio.sleep(0, progress()), lambda p: p[0] >= 1 and p[1] >= 20,
                     timeout_s=30, interval_s=0.002)  # fmt: skip
    answered, in_flight = progress()
    os.kill(victims[0], signal.SIGKILL)
    await load
    assert answered >= 1 and in_flight >= 20, "the kill must land while requests are in flight"
    cut_off = [op for op in ops if op.first is None]
    assert cut_off, "the killed worker's requests must have been cut off (no answer)"
    assert len(cut_off) < BURST  # the other worker answered its own
    # A new worker takes the dead one's place; every request again, same key, to its end.
    await eventually(lambda: asyncio.sleep(0, _worker_pids(own_engine.proc.pid)),
                     lambda pids: len(pids) == 2 and victims[0] not in pids)  # fmt: skip
    await retry_until_final(api, ops)
    final = {op.key: op.final.json["loan_id"] for op in ops if op.final is not None}
    assert all(op.final is not None and op.final.status == 201 for op in ops), ops
    for op in ops:
        if op.acknowledged:
            assert op.first is not None and final[op.key] == op.first.json["loan_id"]
    async with shard_of(settings, customer_id) as conn:
        loans = await conn.fetch("SELECT loan_id FROM loan WHERE credit_line_id = $1", int(line_id))
        used = await conn.fetchval(
            "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(line_id)
        )
        for loan_id in final.values():
            assert (await loan_books(conn, loan_id)).principal == 10_000
        balance = await trial_balance(conn, deep=True)
    assert sorted(str(r["loan_id"]) for r in loans) == sorted(final.values())  # each exactly once
    assert len(set(final.values())) == BURST
    assert used == BURST * 10_000
    assert balance.balanced

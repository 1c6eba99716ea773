"""Guarantee 5: a shard that is down fails only its own customers, fast and clearly;
its customers' requests, retried with their key once it is back, move money once."""

from __future__ import annotations

import time

from engine.settings import Settings
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, new_bank_card
from tests.conftest import stack_command
from tests.money_checks import loan_books, shard_of
from tests.waiting import eventually

SERVER_1_SHARDS = {"shard_2", "shard_3"}


async def test_down_shard_fails_only_its_customers(api: ApiClient, settings: Settings) -> None:
    shard_map = settings.shard_map()
    on_server = {0: "", 1: ""}
    cards = {0: new_bank_card(), 1: new_bank_card()}
    while not (on_server[0] and on_server[1]):
        card = new_bank_card()
        customer_id = await api.customer(bank_card=card)
        name = shard_map.physical_for(shard_of_id(int(customer_id))).name
        server = 1 if name in SERVER_1_SHARDS else 0
        if not on_server[server]:
            on_server[server], cards[server] = customer_id, card
    lines = {n: await api.line(on_server[n]) for n in (0, 1)}
    key = "shard-down-" + str(time.time_ns())  # the down customer's drawdown, retried with it
    # A loan the down customer repays while its shard is down, retried with its key.
    earlier = (await api.disbursed_loan(lines[1], "500.00", disburse_to=cards[1]))["loan_id"]
    repay_key = key + "-repay"
    repayment = {"customer_id": on_server[1], "debit_from": cards[1],
                 "items": [{"loan_id": earlier, "mode": "prepay", "amount": "100.00"}]}  # fmt: skip
    await stack_command("stop-pg", "1")
    try:
        started = time.monotonic()
        down = await api.drawdown(lines[1], disburse_to=cards[1], key=key)
        elapsed_s = time.monotonic() - started
        assert (down.status, down.json["code"]) == (503, "SHARD_UNAVAILABLE"), down
        assert down.headers["Retry-After"]
        assert elapsed_s < 5  # fast: bounded by the pool's connect time-out
        up = await api.drawdown(lines[0], disburse_to=cards[0])
        assert up.status == 201, up
        assert (await api.get(f"/v1/customers/{on_server[1]}/loans")).status == 503
        refused = await api.post("/v1/repayments", repayment, key=repay_key)
        assert (refused.status, refused.json["code"]) == (503, "SHARD_UNAVAILABLE"), refused
    finally:
        await stack_command("start-pg", "1")
    again = await eventually(lambda: api.drawdown(lines[1], disburse_to=cards[1], key=key),
                             lambda r: r.status != 503, timeout_s=30, interval_s=0.2)  # fmt: skip
    assert again.status == 201, again
    replay = await api.drawdown(lines[1], disburse_to=cards[1], key=key)
    assert replay.status == 201 and replay.json["loan_id"] == again.json["loan_id"]
    # The refused repayment left its key free: the retry runs at once (no 409 while a
    # marker of the refused attempt lives on in Redis), and debits once.
    paid = await api.settled_repayment(await api.post("/v1/repayments", repayment, key=repay_key))
    assert paid.status == 201 and paid.json["status"] == "succeeded", paid
    # The refusals wrote nothing: the lines hold exactly the loans made, each once; one
    # repayment of the earlier loan.
    async with shard_of(settings, on_server[0]) as conn:
        loans = await conn.fetch(
            "SELECT loan_id FROM loan WHERE credit_line_id = $1", int(lines[0])
        )
        assert [str(r[0]) for r in loans] == [up.json["loan_id"]]
        assert (await loan_books(conn, up.json["loan_id"])).principal == 100_000
    async with shard_of(settings, on_server[1]) as conn:
        loans = await conn.fetch(
            "SELECT loan_id FROM loan WHERE credit_line_id = $1", int(lines[1])
        )
        assert sorted(str(r[0]) for r in loans) == sorted([earlier, again.json["loan_id"]])
        assert (await loan_books(conn, again.json["loan_id"])).principal == 100_000
        assert (await loan_books(conn, earlier)).principal == 50_000 - 10_000
        repayments = await conn.fetch(
            "SELECT repayment_id, status FROM repayment WHERE customer_id = $1", int(on_server[1])
        )
        assert [(str(r[0]), r[1]) for r in repayments] == [(paid.json["repayment_id"], "succeeded")]
    assert (await api.get(f"/v1/credit-lines/{lines[0]}")).json["used"] == "1000.00"
    assert (await api.get(f"/v1/credit-lines/{lines[1]}")).json["used"] == "1400.00"

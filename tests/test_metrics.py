"""Metrics move by the right amount with real traffic, added up over the prefork
workers; a stopped shard shows in its gauges."""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.api_client import ApiClient, new_bank_card
from tests.conftest import EngineProcess, stack_command

DRAWDOWNS = 12
MANY_LINES = 32


async def _scrape(
    http: aiohttp.ClientSession, url: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with http.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "pid")
            key = (sample.name, labels)
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_business_and_http_metrics_add_up_across_workers(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    assert engine.relay is not None
    relay_url = f"http://127.0.0.1:{engine.env['ENGINE_RELAY_METRICS_PORT']}/metrics"
    before = await _scrape(http, f"{engine.ops_url}/metrics")
    relay_before = await _scrape(http, relay_url)
    line_id = await api.line(await api.customer(), limit="50000.00")
    replies = await asyncio.gather(*(api.drawdown(line_id, "1000.00") for _ in range(DRAWDOWNS)))
    assert all(r.status == 201 for r in replies)
    refused = await api.drawdown(line_id, "99999.00")
    assert refused.status == 422
    replayed_key = "metrics-" + secrets.token_hex(8)
    await api.drawdown(line_id, "10.00", key=replayed_key)
    await api.drawdown(line_id, "10.00", key=replayed_key)
    for reply in replies:
        await api.wait_for_loan(reply.json["loan_id"])
    after = await _scrape(http, f"{engine.ops_url}/metrics")
    labels = {"tenant": "demo", "channel": "demo", "product": "demo-credit"}
    delta = _value(after, "drawdowns_total", outcome="accepted", **labels) - _value(
        before, "drawdowns_total", outcome="accepted", **labels
    )
    assert delta == DRAWDOWNS + 1  # the replay is not a new drawdown
    refused_delta = _value(after, "drawdowns_total", outcome="refused") - _value(
        before, "drawdowns_total", outcome="refused"
    )
    assert refused_delta == 1
    amount_delta = _value(after, "drawdown_amount_fen_total", **labels) - _value(
        before, "drawdown_amount_fen_total", **labels
    )
    assert amount_delta == DRAWDOWNS * 100_000 + 1_000
    created = {"route": "/v1/drawdowns", "method": "POST", "status": "201"}
    assert _value(after, "http_requests_total", **created) - _value(
        before, "http_requests_total", **created
    ) == (DRAWDOWNS + 2)
    count = {"route": "/v1/drawdowns", "method": "POST"}
    assert (
        _value(after, "http_request_duration_seconds_count", **count)
        - _value(before, "http_request_duration_seconds_count", **count)
        == DRAWDOWNS + 3
    )
    assert (
        _value(after, "idempotency_replays_total") - _value(before, "idempotency_replays_total")
        == 1
    )
    # In multiprocess mode the numbers above are sums over both prefork workers.
    relay_after = await _scrape(http, relay_url)
    disbursed = _value(relay_after, "disbursement_latency_seconds_count") - _value(
        relay_before, "disbursement_latency_seconds_count"
    )
    assert disbursed >= DRAWDOWNS
    assert (
        _value(relay_after, "disbursement_latency_seconds_bucket", le="30.0")
        - _value(relay_before, "disbursement_latency_seconds_bucket", le="30.0")
        == disbursed
    )  # every one within the 30 s promise


async def test_stopped_shard_shows_in_gauges(
    engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{engine.ops_url}/metrics"
    samples = await _scrape(http, url)
    assert _value(samples, "shard_pool_connections", shard="shard_0", state="max") > 0
    await stack_command("stop-pg", "1")
    try:
        deadline = time.monotonic() + 20
        while _value(samples := await _scrape(http, url), "shard_up", shard="shard_2") != 0:
            assert time.monotonic() < deadline, "shard_2 still reported up"
            await asyncio.sleep(0.5)
        assert _value(samples, "shard_up", shard="shard_0") >= 1
    finally:
        await stack_command("start-pg", "1")
    deadline = time.monotonic() + 20
    while _value(await _scrape(http, url), "shard_up", shard="shard_2") < 1:
        assert time.monotonic() < deadline, "shard_2 did not come back"
        await asyncio.sleep(0.5)


async def test_drawdowns_on_many_lines_at_once_are_booked_together(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    lines = [await api.line(await api.customer()) for _ in range(MANY_LINES)]
    before = await _scrape(http, f"{engine.ops_url}/metrics")
    replies = await asyncio.gather(*(api.drawdown(line_id, "1000.00") for line_id in lines))
    assert [r.status for r in replies] == [201] * MANY_LINES
    after = await _scrape(http, f"{engine.ops_url}/metrics")
    calls, booked, failed = (
        _value(after, name) - _value(before, name)
        for name in (
            "drawdown_booking_batch_size_count",
            "drawdown_booking_batch_size_sum",
            "drawdown_booking_batch_failures_total",
        )
    )
    assert (booked, failed) == (MANY_LINES, 0)  # each once, none redone alone
    assert calls < MANY_LINES, "drawdowns read at the same time leave in one call"
    for line_id in lines:
        assert (await api.get(f"/v1/credit-lines/{line_id}")).json["used"] == "1000.00"


async def test_a_repayment_shows_its_phases_and_its_core_call(
    api: ApiClient, engine: EngineProcess, http: aiohttp.ClientSession
) -> None:
    """The SRE's two questions about a slow repayment: which phase, and is it core."""
    assert engine.relay is not None
    relay_url = f"http://127.0.0.1:{engine.env['ENGINE_RELAY_METRICS_PORT']}/metrics"
    card = new_bank_card()
    customer_id = await api.customer(bank_card=card)
    line_id = await api.line(customer_id, limit="50000.00")
    relay_before = await _scrape(http, relay_url)
    loan = await api.disbursed_loan(line_id, "1000.00", disburse_to=card)
    relay_after = await _scrape(http, relay_url)
    paid = sum(
        _value(relay_after, "core_call_duration_seconds_count", call=call, result="answered")
        - _value(relay_before, "core_call_duration_seconds_count", call=call, result="answered")
        for call in ("payment", "payment_batch")
    )
    assert paid >= 1  # the relay's call that paid the drawdown out
    before = await _scrape(http, f"{engine.ops_url}/metrics")
    item = {"loan_id": loan["loan_id"], "mode": "prepay", "amount": "100.00",
            "prepay_rule": "reduce_nearest"}  # fmt: skip
    reply = await api.post(
        "/v1/repayments",
        {"customer_id": customer_id, "debit_from": card, "items": [item]},
    )
    assert reply.status == 201, reply
    assert reply.json["status"] == "succeeded"  # completed inline: all three phases ran
    after = await _scrape(http, f"{engine.ops_url}/metrics")

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    for phase in ("open", "debit", "complete"):
        assert delta("repayment_phase_seconds_count", phase=phase) == 1, phase
        # Phases are parts of the request: none longer than the whole answer took.
        assert delta("repayment_phase_seconds_sum", phase=phase) <= delta(
            "http_request_duration_seconds_sum", route="/v1/repayments"
        )
    debits = delta("core_call_duration_seconds_count", call="debit", result="answered") + delta(
        "core_call_duration_seconds_count", call="debit_batch", result="answered"
    )
    assert debits == 1
    assert delta("core_call_duration_seconds_count", result="no_answer") == 0

"""Issue 21, item 1: a captured signed drawdown or repayment, resent within the time
window after Redis lost its keys (a restart: it runs without persistence) under a new
Idempotency-Key, must not book a second loan or a second debit.

- Signature version 2 signs the channel and the key: a new key breaks the signature.
- Version 1, still accepted in a channel's changeover window, does not sign the key:
  the request's nonce, recorded in the shard with its idempotency record, refuses the
  replay there (AUTH_NONCE_REPLAYED), Redis restarted or down.
- After the window, a right version 1 signature is refused with its own code.

Each attack is shown refused, and nothing moved: the loans, the line's used amount,
the repayments and the customer's ledger postings are what they were before it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.security.pii import dev_cipher
from engine.security.signing import signed_headers
from engine.settings import Settings
from engine.stores import redis_wire
from engine.stores.control_admin import add_channel, set_signature_v1_until
from sharding.ids import shard_of_id
from tests.api_client import ApiClient, Reply
from tests.conftest import EngineProcess, Fakes, OwnRedis

SECRET = "v1-channel-secret-" + secrets.token_hex(8)


@pytest.fixture
async def v1_channel(control_conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A channel of tenant demo still in its signature version 1 window."""
    channel_id = "v1-" + secrets.token_hex(4)
    await add_channel(control_conn, dev_cipher(), channel_id, "demo", SECRET)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    await set_signature_v1_until(control_conn, channel_id, until)
    await asyncio.sleep(0.6)  # engines reload reference data every 0.2 s in tests
    yield channel_id
    await control_conn.execute(
        "UPDATE channel SET status = 'disabled', status_reason = 'test' WHERE channel_id = $1",
        channel_id,
    )


@pytest.fixture
def engine_on_own_redis(fakes: Fakes, own_redis: OwnRedis) -> Iterator[EngineProcess]:
    proc = EngineProcess(
        fakes,
        workers=1,
        extra_env={"ENGINE_REDIS_URL": f"redis://:s3cret@127.0.0.1:{own_redis.port}/0"},
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


class Captured:
    """A request as an eavesdropper saw it: the bytes and the headers, signature included."""

    def __init__(self, method: str, path: str, body: dict[str, Any], headers: dict[str, str]):
        self.method, self.path = method, path
        self.data = json.dumps(body).encode()
        self.headers = headers | {"Content-Type": "application/json"}


def capture(channel: str, path: str, body: dict[str, Any], key: str, version: int) -> Captured:
    data = json.dumps(body).encode()
    headers = signed_headers(
        channel, SECRET, "POST", path, data, idempotency_key=key, version=version
    )
    return Captured("POST", path, body, headers)


async def send(http: aiohttp.ClientSession, base_url: str, request: Captured,
               **changed_headers: str) -> Reply:  # fmt: skip
    headers = request.headers | {k.replace("_", "-"): v for k, v in changed_headers.items()}
    async with http.post(base_url + request.path, data=request.data, headers=headers) as resp:
        from multidict import CIMultiDict

        return Reply(resp.status, await resp.read(), CIMultiDict(resp.headers))


async def money_state(settings: Settings, customer_id: str) -> dict[str, object]:
    """Everything a second booking or debit would change, for one customer."""
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM loan WHERE customer_id = $1) AS loans,
                      (SELECT coalesce(sum(used_fen), 0) FROM credit_line
                       WHERE customer_id = $1) AS used_fen,
                      (SELECT count(*) FROM repayment WHERE customer_id = $1) AS repayments,
                      (SELECT count(*) FROM outbox WHERE customer_id = $1
                       AND kind IN ('disburse', 'debit')) AS money_orders,
                      (SELECT count(*) FROM ledger_txn WHERE customer_id = $1
                       AND kind IN ('drawdown', 'repayment')) AS postings""",
            int(customer_id),
        )
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


async def _restart_redis(own_redis: OwnRedis, engine: EngineProcess) -> None:
    """Killed and started again empty, as a Redis without persistence comes back."""
    own_redis.kill()
    own_redis.start()
    deadline = time.monotonic() + 10 * redis_wire.RECONNECT_PAUSE_S + 5
    while True:
        async with aiohttp.ClientSession() as probe, probe.get(f"{engine.ops_url}/readyz") as r:
            states = {c["name"]: c["state"] for c in (await r.json())["components"]}
        if states["redis"] == "up":
            return
        assert time.monotonic() < deadline, "the engine did not reconnect to Redis"
        await asyncio.sleep(0.1)


async def test_v2_drawdown_resent_under_a_new_key_is_refused(
    api: ApiClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    body = {"credit_line_id": line_id, "amount": "1000.00", "term_months": 6,
            "repayment_method": "equal_installment", "disburse_to": api.card_of(customer_id)}  # fmt: skip
    data = json.dumps(body).encode()
    key = "dd-" + secrets.token_hex(6)
    headers = signed_headers(api.channel, api.secret, "POST", "/v1/drawdowns", data,
                             idempotency_key=key)  # fmt: skip
    captured = Captured("POST", "/v1/drawdowns", body, headers)
    assert (await send(http, api.base_url, captured)).status == 201
    before = await money_state(settings, customer_id)

    replay = await send(http, api.base_url, captured, Idempotency_Key="dd-" + secrets.token_hex(6))
    assert (replay.status, replay.json["code"]) == (401, "AUTH_BAD_SIGNATURE"), replay
    assert await money_state(settings, customer_id) == before


async def test_v1_drawdown_and_repayment_replayed_after_redis_restart_are_refused(
    engine_on_own_redis: EngineProcess,
    own_redis: OwnRedis,
    http: aiohttp.ClientSession,
    settings: Settings,
    v1_channel: str,
) -> None:
    """The issue's attack, on an engine whose Redis is restarted empty between the
    request and its replay; a version 1 signature does not cover the key."""
    base = engine_on_own_redis.base_url
    api = ApiClient(http, base, v1_channel, SECRET)  # registers and grants on version 2
    customer_id = await api.customer()
    line_id = await api.line(customer_id)
    card = api.card_of(customer_id)
    drawdown = {"credit_line_id": line_id, "amount": "1000.00", "term_months": 6,
                "repayment_method": "equal_installment", "disburse_to": card}  # fmt: skip
    captured = capture(v1_channel, "/v1/drawdowns", drawdown, "dd-" + secrets.token_hex(6), 1)
    first = await send(http, base, captured)
    assert first.status == 201, first
    loan_id = first.json["loan_id"]
    await api.wait_for_loan(loan_id)  # paid out by the relay: nothing moves after this
    before = await money_state(settings, customer_id)

    await _restart_redis(own_redis, engine_on_own_redis)
    replay = await send(http, base, captured, Idempotency_Key="dd-" + secrets.token_hex(6))
    assert (replay.status, replay.json["code"]) == (401, "AUTH_NONCE_REPLAYED"), replay
    assert await money_state(settings, customer_id) == before

    # A repayment: captured, Redis restarted, resent under a new key.
    repay = {"customer_id": customer_id, "debit_from": card,
             "items": [{"loan_id": loan_id, "mode": "prepay", "amount": "100.00"}]}  # fmt: skip
    captured = capture(v1_channel, "/v1/repayments", repay, "rp-" + secrets.token_hex(6), 1)
    paid = await api.settled_repayment(await send(http, base, captured))
    assert paid.status == 201 and paid.json["status"] == "succeeded", paid
    before = await money_state(settings, customer_id)
    await _restart_redis(own_redis, engine_on_own_redis)
    replay = await send(http, base, captured, Idempotency_Key="rp-" + secrets.token_hex(6))
    assert (replay.status, replay.json["code"]) == (401, "AUTH_NONCE_REPLAYED"), replay
    assert await money_state(settings, customer_id) == before

    # Redis down altogether: the shard still refuses it.
    own_redis.kill()
    replay = await send(http, base, captured, Idempotency_Key="rp-" + secrets.token_hex(6))
    assert (replay.status, replay.json["code"]) == (401, "AUTH_NONCE_REPLAYED"), replay
    assert await money_state(settings, customer_id) == before


async def test_v1_after_the_window_is_refused_with_its_own_code(
    api: ApiClient,
    http: aiohttp.ClientSession,
    settings: Settings,
    control_conn: asyncpg.Connection,
    v1_channel: str,
) -> None:
    channel_api = ApiClient(http, api.base_url, v1_channel, SECRET)
    customer_id = await channel_api.customer()
    line_id = await channel_api.line(customer_id)
    await set_signature_v1_until(control_conn, v1_channel, None)  # the changeover is over
    await asyncio.sleep(0.6)
    before = await money_state(settings, customer_id)
    body = {"credit_line_id": line_id, "amount": "1000.00", "term_months": 6,
            "repayment_method": "equal_installment",
            "disburse_to": channel_api.card_of(customer_id)}  # fmt: skip
    old = capture(v1_channel, "/v1/drawdowns", body, "dd-" + secrets.token_hex(6), 1)
    refused = await send(http, api.base_url, old)
    assert (refused.status, refused.json["code"]) == (401, "AUTH_SIGNATURE_VERSION_RETIRED")
    assert await money_state(settings, customer_id) == before
    # version 2 goes on
    assert (await channel_api.drawdown(line_id, "1000.00")).status == 201


async def test_durable_nonces_are_swept_after_their_retention(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    """Bounded: the relay deletes nonces older than security.nonce_retention_s."""
    from engine.stores.nonce_sweep import sweep

    conn = shard_conns["shard_0"]
    channel = "sweep-" + secrets.token_hex(4)
    await conn.execute(
        """INSERT INTO request_nonce (channel_id, nonce, seen_at)
           SELECT $1, 'old-' || n, now() - interval '1 hour' FROM generate_series(1, 250) n
           UNION ALL SELECT $1, 'fresh', now()""",
        channel,
    )
    assert await sweep(conn, retention_s=900, batch=100) >= 250
    left = await conn.fetch("SELECT nonce FROM request_nonce WHERE channel_id = $1", channel)
    assert [r["nonce"] for r in left] == ["fresh"]

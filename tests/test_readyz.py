"""`/healthz` and `/readyz` of a real engine; a stopped shard server shows as down
while the others stay up, and the engine recovers when it returns."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import ROOT, EngineProcess


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _states(body: Any) -> dict[str, str]:
    return {c["name"]: c["state"] for c in body["components"]}


def _wait_for(url: str, predicate: Any, timeout_s: float = 20.0) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = _get(url)
        if predicate(status, body) or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


def test_healthz_and_readyz(engine: EngineProcess) -> None:
    assert _get(f"{engine.base_url}/healthz") == (200, {"status": "ok"})
    status, body = _get(f"{engine.ops_url}/readyz")
    assert status == 200
    assert body["ready"] is True
    assert _states(body) == {
        "control": "up",
        "shard_0": "up",
        "shard_1": "up",
        "shard_2": "up",
        "shard_3": "up",
        "redis": "up",
    }


def test_unknown_route_is_a_problem_document(engine: EngineProcess) -> None:
    status, body = _get(f"{engine.base_url}/no/such/route")
    assert status == 404
    assert body["code"] == "NOT_FOUND"
    assert body["request_id"]


def test_stopped_shard_is_down_and_recovers(engine: EngineProcess) -> None:
    url = f"{engine.ops_url}/readyz"
    subprocess.run([ROOT / "ops" / "stack.sh", "stop-pg", "1"], check=True)
    try:
        status, body = _wait_for(url, lambda s, b: s == 503)
        assert status == 503
        states = _states(body)
        assert states["shard_2"] == "down"
        assert states["shard_3"] == "down"
        assert (
            states["shard_0"] == states["shard_1"] == states["control"] == states["redis"] == "up"
        )
    finally:
        subprocess.run([ROOT / "ops" / "stack.sh", "start-pg", "1"], check=True)
    status, body = _wait_for(url, lambda s, b: s == 200)
    assert status == 200, body
    assert set(_states(body).values()) == {"up"}


def test_openapi_document_lists_every_route(engine: EngineProcess) -> None:
    status, doc = _get(f"{engine.ops_url}/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert {
        "/v1/customers",
        "/v1/drawdowns",
        "/v1/repayments",
        "/v1/loans/{loan_id}/payoff-quote",
        "/v1/contracts/{contract_id}",
        "/v1/contracts/{contract_id}/otp",
    } <= set(doc["paths"])
    sign = doc["paths"]["/v1/contracts/{contract_id}/sign"]["post"]
    assert {"X-Signer-IP", "X-Signer-Device-Id"} <= {p["name"] for p in sign["parameters"]}
    drawdown = doc["components"]["schemas"]["DrawdownCreate"]
    assert drawdown["additionalProperties"] is False  # unknown fields are refused
    assert set(drawdown["required"]) >= {"credit_line_id", "amount", "term_months", "disburse_to"}
    post = doc["paths"]["/v1/drawdowns"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"])


def test_operations_endpoints_are_not_on_the_public_port(engine: EngineProcess) -> None:
    """Issue 21, item 7: /readyz (a connection from every pool per call), /metrics
    (volumes per tenant) and /openapi.json answer on the operations listener only; the
    public port keeps the static /healthz."""
    for path in ("/readyz", "/metrics", "/openapi.json"):
        status, body = _get(f"{engine.base_url}{path}")
        assert (status, body["code"]) == (404, "NOT_FOUND"), path
    assert _get(f"{engine.base_url}/healthz") == (200, {"status": "ok"})
    assert _get(f"{engine.ops_url}/healthz") == (200, {"status": "ok"})
    with urllib.request.urlopen(f"{engine.ops_url}/metrics", timeout=5) as resp:
        assert resp.status == 200 and b"http_requests_total" in resp.read()


def test_readyz_probes_at_most_about_once_a_second(engine: EngineProcess) -> None:
    """Asked 30 times at once, the pools are probed once (the latencies are one probe's)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: _get(f"{engine.ops_url}/readyz"), range(30)))
    per_worker = {json.dumps(body, sort_keys=True) for _, body in answers}
    # One shared answer per worker (the engine runs two), or two if the 1 s expired
    # while the thirty were being asked: never one probe per call.
    assert len(per_worker) <= 4

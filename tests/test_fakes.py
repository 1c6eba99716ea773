"""The fakes of core banking and the SMS gateway, each a real subprocess on a free port.

Everything goes over HTTP, as the engine's adapters will: no fake module is
imported here. Each test starts its own fakes with a temporary record file, so
knobs set by one test never leak into another. None of the DB-stack fixtures of
conftest.py is used.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
CALL_TIMEOUT = aiohttp.ClientTimeout(total=5)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
CARD = "6222020000001234"
PHONE = "13800005678"
PAYMENT_REASONS = {"CARD_FROZEN", "ACCOUNT_CLOSED", "CARD_NOT_FOUND"}
DEBIT_REASONS = {"INSUFFICIENT_FUNDS", "CARD_FROZEN"}
BAD_TRANSFERS: list[object] = [
    {"reference": "b-1", "card": CARD, "amount": "12.3"},
    {"reference": "b-1", "card": CARD, "amount": "-1.00"},
    {"reference": "b-1", "card": CARD, "amount": "0.00"},
    {"reference": "b-1", "card": CARD, "amount": "1e3"},
    {"reference": "b-1", "card": CARD, "amount": 12.5},
    {"reference": "b-1", "card": "6222-0200", "amount": "1.00"},
    {"reference": "b-1", "card": "12345", "amount": "1.00"},
    {"reference": "", "card": CARD, "amount": "1.00"},
    {"reference": "x" * 65, "card": CARD, "amount": "1.00"},
    {"reference": "a/b", "card": CARD, "amount": "1.00"},
    {"reference": "b-1", "card": CARD},
    {"reference": "b-1", "card": CARD, "amount": "1.00", "extra": 1},
    ["not", "an", "object"],
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fake:
    """One fake as a subprocess: `python -m loadtest.fakes.<module>`."""

    def __init__(
        self, module: str, prefix: str, record_path: Path, log_directory: Path, env: dict[str, str]
    ) -> None:
        self.module = module
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.record_path = record_path
        self.log_path = log_directory / f"{module}-{self.port}.log"
        self.env = dict(os.environ) | env
        self.env |= {
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(self.port),
            f"{prefix}_RECORD_FILE": str(record_path),
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert self.proc is None
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"loadtest.fakes.{self.module}",
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.module} exited: {self.log_path.read_text()}")
                try:
                    async with session.get(f"{self.base_url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.module} not ready in {START_TIMEOUT_S} s")

    async def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)


class Fakes:
    """Starts fakes for one test and stops them all at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Fake] = []

    async def core(self, record_path: Path | None = None, **env: str) -> Fake:
        path = record_path or self.directory / f"core-{len(self.started)}.jsonl"
        env = {"FAKE_CORE_LATENCY_MS": "1"} | env
        return await self._start(Fake("core_bank", "FAKE_CORE", path, self.directory, env))

    async def sms(self, **env: str) -> Fake:
        path = self.directory / f"sms-{len(self.started)}.jsonl"
        env = {"FAKE_SMS_LATENCY_MS": "1"} | env
        return await self._start(Fake("sms_gateway", "FAKE_SMS", path, self.directory, env))

    async def _start(self, fake: Fake) -> Fake:
        self.started.append(fake)
        await fake.start()
        return fake


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    launcher = Fakes(tmp_path)
    try:
        yield launcher
    finally:
        await asyncio.gather(*(fake.stop() for fake in launcher.started))


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CALL_TIMEOUT) as session:
        yield session


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    timeout_s: float | None = None,
) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else CALL_TIMEOUT
    async with session.request(method, url, json=body, timeout=timeout) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


def transfer(reference: str, amount: str = "1000.00", card: str = CARD) -> dict[str, str]:
    return {"reference": reference, "card": card, "amount": amount, "memo": "test"}


async def records(session: aiohttp.ClientSession, core: Fake) -> list[dict[str, Any]]:
    status, body = await call(session, "GET", f"{core.base_url}/fake/records")
    assert status == 200
    assert isinstance(body, list)
    return body


async def test_payment_succeeds_and_a_repeat_returns_the_first_outcome(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core()
    url = f"{core.base_url}/core/v1/payments"
    status, first = await call(client, "POST", url, transfer("pay-1", "1234.56"))
    assert status == 200
    assert first["reference"] == "pay-1" and first["status"] == "succeeded"
    assert first["core_txn_id"].startswith("CT") and "reason" not in first
    status, again = await call(client, "POST", url, transfer("pay-1", "1234.56"))
    assert (status, again) == (200, first)
    # Concurrent repeats of a new reference: one decision, shared by all.
    answers = await asyncio.gather(
        *(call(client, "POST", url, transfer("pay-2", "10.00")) for _ in range(8))
    )
    assert len({answer["core_txn_id"] for _, answer in answers}) == 1
    book = await records(client, core)
    assert [(r["reference"], r["status"], r["amount_fen"]) for r in book] == [
        ("pay-1", "succeeded", 123456),
        ("pay-2", "succeeded", 1000),
    ]
    assert book[0]["card_last4"] == "1234" and book[0]["kind"] == "payment"
    assert CARD not in core.record_path.read_text()
    status, inquiry = await call(client, "GET", f"{core.base_url}/core/v1/transactions/pay-1")
    assert status == 200
    assert inquiry["status"] == "succeeded" and inquiry["kind"] == "payment"
    assert inquiry["amount"] == "1234.56" and inquiry["core_txn_id"] == first["core_txn_id"]
    status, unknown = await call(client, "GET", f"{core.base_url}/core/v1/transactions/nope")
    assert (status, unknown["status"]) == (404, "not_found")
    # The same reference as a debit, or with another amount, is a conflict, not a new transfer.
    debit_url = f"{core.base_url}/core/v1/debits"
    status, conflict = await call(client, "POST", debit_url, transfer("pay-1", "1234.56"))
    assert (status, conflict["error"]) == (409, "reference_conflict")
    status, conflict = await call(client, "POST", url, transfer("pay-1", "1.00"))
    assert status == 409
    assert len(await records(client, core)) == 2
    status, metrics = await call(client, "GET", f"{core.base_url}/metrics")
    assert status == 200
    assert 'fake_core_paid_amount_fen_total{kind="payment"} 124456.0' in metrics
    assert 'fake_core_requests_total{endpoint="payments",outcome="duplicate"} 8.0' in metrics


async def test_fail_ratio_one_fails_and_records_the_failure(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core(FAKE_CORE_FAIL_RATIO="1")
    status, paid = await call(
        client, "POST", f"{core.base_url}/core/v1/payments", transfer("pay-f")
    )
    assert status == 200 and paid["status"] == "failed" and paid["reason"] in PAYMENT_REASONS
    status, debited = await call(
        client, "POST", f"{core.base_url}/core/v1/debits", transfer("debit-f")
    )
    assert status == 200 and debited["status"] == "failed"
    assert debited["reason"] in DEBIT_REASONS
    # A repeat returns the failure again, even though nothing would stop it now.
    await call(client, "POST", f"{core.base_url}/fake/knobs", {"fail_ratio": 0})
    status, again = await call(
        client, "POST", f"{core.base_url}/core/v1/payments", transfer("pay-f")
    )
    assert (status, again) == (200, paid)
    book = await records(client, core)
    assert [(r["reference"], r["kind"], r["status"]) for r in book] == [
        ("pay-f", "payment", "failed"),
        ("debit-f", "debit", "failed"),
    ]
    status, inquiry = await call(client, "GET", f"{core.base_url}/core/v1/transactions/debit-f")
    assert (status, inquiry["status"], inquiry["reason"]) == (200, "failed", debited["reason"])


async def test_timeout_withholds_the_answer_and_inquiry_tells_the_truth(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core(
        FAKE_CORE_TIMEOUT_RATIO="1", FAKE_CORE_TIMEOUT_HANG_S="0.5", FAKE_CORE_SEED="7"
    )
    references = [f"pay-t{i}" for i in range(12)]

    async def pay(reference: str) -> None:
        with pytest.raises(TimeoutError):
            await call(
                client, "POST", f"{core.base_url}/core/v1/payments", transfer(reference), 0.2
            )

    await asyncio.gather(*(pay(reference) for reference in references))
    book = {r["reference"]: r for r in await records(client, core)}
    assert set(book) == set(references)
    for reference in references:
        status, inquiry = await call(
            client, "GET", f"{core.base_url}/core/v1/transactions/{reference}"
        )
        record = book[reference]
        assert status == 200 and record["timed_out"] is True
        assert inquiry["status"] == record["status"]
        assert inquiry["core_txn_id"] == record["core_txn_id"]
        if record["status"] == "failed":
            assert record["reason"] == inquiry["reason"] == "TIMEOUT_NOT_BOOKED"
    assert {r["status"] for r in book.values()} == {"succeeded", "failed"}  # both halves (seed 7)
    # A repeat after the time-out answers at once with the recorded outcome.
    status, again = await call(
        client, "POST", f"{core.base_url}/core/v1/payments", transfer(references[0]), 0.3
    )
    assert status == 200 and again["status"] == book[references[0]]["status"]
    assert len(await records(client, core)) == len(references)


async def test_statement_lists_the_days_rows(fakes: Fakes, client: aiohttp.ClientSession) -> None:
    core = await fakes.core()
    await call(client, "POST", f"{core.base_url}/core/v1/payments", transfer("st-1", "50.00"))
    await call(client, "POST", f"{core.base_url}/core/v1/debits", transfer("st-2", "7.05"))
    await call(client, "POST", f"{core.base_url}/fake/knobs", {"fail_ratio": 1})
    await call(client, "POST", f"{core.base_url}/core/v1/payments", transfer("st-3", "9.99"))
    book = await records(client, core)
    day = book[0]["booked_at"][:10]
    assert {r["booked_at"][:10] for r in book} == {day}
    assert all(r["booked_at"].endswith("+08:00") for r in book)
    async with client.get(f"{core.base_url}/core/v1/statements/{day}") as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        text = await resp.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "reference,kind,status,amount,card_last4,core_txn_id,booked_at"
    columns = ("reference", "kind", "status", "amount", "card_last4", "core_txn_id", "booked_at")
    assert rows == [{name: record[name] for name in columns} for record in book]
    assert [(row["reference"], row["status"]) for row in rows] == [
        ("st-1", "succeeded"),
        ("st-2", "succeeded"),
        ("st-3", "failed"),
    ]
    status, other_day = await call(client, "GET", f"{core.base_url}/core/v1/statements/2001-01-01")
    assert status == 200 and other_day.splitlines() == [text.splitlines()[0]]
    for bad in ("2024-13-01", "20240101", "yesterday"):
        status, error = await call(client, "GET", f"{core.base_url}/core/v1/statements/{bad}")
        assert (status, error["error"]) == (400, "invalid_date")


async def test_restart_keeps_the_records(
    fakes: Fakes, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "core" / "records.jsonl"  # the directory does not exist yet
    core = await fakes.core(path)
    url = f"{core.base_url}/core/v1/payments"
    _, first = await call(client, "POST", url, transfer("rs-1"))
    await call(client, "POST", f"{core.base_url}/fake/knobs", {"fail_ratio": 1})
    _, failed = await call(client, "POST", url, transfer("rs-2"))
    before = await records(client, core)
    await core.stop()
    with path.open("ab") as file:  # a crash in the middle of a write: never acknowledged
        file.write(b'{"reference":"rs-torn","kind":"pay')
    core = await fakes.core(path)
    url = f"{core.base_url}/core/v1/payments"
    assert await records(client, core) == before
    assert path.read_bytes().endswith(b"}\n")
    assert (await call(client, "POST", url, transfer("rs-1")))[1] == first
    assert (await call(client, "POST", url, transfer("rs-2")))[1] == failed
    _, third = await call(client, "POST", url, transfer("rs-3"))
    assert third["status"] == "succeeded"  # knobs come from the environment again
    assert third["core_txn_id"] > max(first["core_txn_id"], failed["core_txn_id"])
    assert [r["reference"] for r in await records(client, core)] == ["rs-1", "rs-2", "rs-3"]


async def test_knobs_endpoint_changes_behaviour(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core()
    knobs_url = f"{core.base_url}/fake/knobs"
    url = f"{core.base_url}/core/v1/payments"
    assert (await call(client, "POST", url, transfer("kn-1")))[1]["status"] == "succeeded"
    status, knobs = await call(client, "POST", knobs_url, {"fail_ratio": 1, "latency_ms": 300})
    assert status == 200 and knobs["fail_ratio"] == 1.0 and knobs["latency_ms"] == 300
    started = time.monotonic()
    assert (await call(client, "POST", url, transfer("kn-2")))[1]["status"] == "failed"
    assert time.monotonic() - started >= 0.3
    for bad in (
        {"fail_ratio": 1.5},
        {"fail_ratio": 0.6, "timeout_ratio": 0.6},
        {"latency_ms": -1},
        {"latency_ms": 0.5},
        {"timeout_hang_s": 10_000},
        {"volume": 11},
    ):
        status, error = await call(client, "POST", knobs_url, bad)
        assert status == 400 and "error" in error, bad
    assert (await call(client, "GET", knobs_url))[1] == knobs
    sms = await fakes.sms()
    status, error = await call(client, "POST", f"{sms.base_url}/fake/knobs", {"timeout_ratio": 1})
    assert (status, error["error"]) == (400, "invalid_knobs")


async def test_bad_transfer_is_400(fakes: Fakes, client: aiohttp.ClientSession) -> None:
    core = await fakes.core()
    for body in BAD_TRANSFERS:
        for path in ("payments", "debits"):
            status, error = await call(client, "POST", f"{core.base_url}/core/v1/{path}", body)
            assert status == 400 and isinstance(error["error"], str), (path, body, error)
    async with client.post(f"{core.base_url}/core/v1/payments", data=b"{not json") as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"
    assert await records(client, core) == []


async def test_sms_duplicate_reference_is_not_sent_twice(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    sms = await fakes.sms()
    url = f"{sms.base_url}/sms/v1/send"
    body = {"reference": "sms-1", "phone": PHONE, "text": "您的借款 1000.00 元已到账"}
    status, first = await call(client, "POST", url, body)
    assert status == 200 and first["status"] == "accepted" and first["reference"] == "sms-1"
    answers = await asyncio.gather(*(call(client, "POST", url, body) for _ in range(5)))
    assert all(answer == (200, first) for answer in answers)
    status, messages = await call(client, "GET", f"{sms.base_url}/fake/messages")
    assert status == 200 and len(messages) == 1
    assert messages[0]["message_id"] == first["message_id"]
    assert messages[0]["phone_masked"] == "138****5678" and messages[0]["text"] == body["text"]
    assert PHONE not in sms.record_path.read_text()
    found = f"{sms.base_url}/fake/messages?reference="
    assert (await call(client, "GET", found + "sms-1"))[1] == messages
    assert (await call(client, "GET", found + "sms-none"))[1] == []
    status, metrics = await call(client, "GET", f"{sms.base_url}/metrics")
    assert 'fake_sms_messages_total{outcome="accepted"} 1.0' in metrics
    assert 'fake_sms_messages_total{outcome="duplicate"} 5.0' in metrics


async def test_sms_failure_sends_nothing_and_a_resend_can_succeed(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    sms = await fakes.sms(FAKE_SMS_FAIL_RATIO="1")
    url = f"{sms.base_url}/sms/v1/send"
    body = {"reference": "sms-f", "phone": PHONE, "text": "hello"}
    assert await call(client, "POST", url, body) == (503, {"status": "failed"})
    assert (await call(client, "GET", f"{sms.base_url}/fake/messages"))[1] == []
    await call(client, "POST", f"{sms.base_url}/fake/knobs", {"fail_ratio": 0})
    status, accepted = await call(client, "POST", url, body)
    assert status == 200 and accepted["status"] == "accepted"
    assert len((await call(client, "GET", f"{sms.base_url}/fake/messages"))[1]) == 1


async def test_sms_batch_decides_each_message_alone(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    sms = await fakes.sms()
    url = f"{sms.base_url}/sms/v1/send-batch"
    messages = [{"reference": f"b-{n}", "phone": PHONE, "text": f"第{n}条"} for n in range(3)]
    status, first = await call(client, "POST", url, {"messages": messages})
    assert status == 200
    assert [(r["reference"], r["status"]) for r in first["results"]] == [
        (f"b-{n}", "accepted") for n in range(3)
    ]
    # A repeat (one old reference, one new) sends only the new one; the old keeps its ID.
    again = [messages[1], {"reference": "b-3", "phone": PHONE, "text": "第3条"}]
    status, second = await call(client, "POST", url, {"messages": again})
    assert status == 200
    assert second["results"][0] == first["results"][1]
    assert second["results"][1]["status"] == "accepted"
    status, recorded = await call(client, "GET", f"{sms.base_url}/fake/messages")
    assert [m["reference"] for m in recorded] == ["b-0", "b-1", "b-2", "b-3"]
    await call(client, "POST", f"{sms.base_url}/fake/knobs", {"fail_ratio": 1})
    status, failed = await call(client, "POST", url, {"messages": [
        {"reference": "b-4", "phone": PHONE, "text": "x"}]})  # fmt: skip
    assert (status, failed["results"]) == (200, [{"reference": "b-4", "status": "failed"}])
    for bad in (
        {"messages": []},
        {"messages": [messages[0], messages[0]]},
        {"messages": [{"reference": f"m-{n}", "phone": PHONE, "text": "x"} for n in range(33)]},
    ):
        status, error = await call(client, "POST", url, bad)
        assert status == 400 and "error" in error
    assert len((await call(client, "GET", f"{sms.base_url}/fake/messages"))[1]) == 4


async def test_bad_sms_is_400(fakes: Fakes, client: aiohttp.ClientSession) -> None:
    sms = await fakes.sms()
    url = f"{sms.base_url}/sms/v1/send"
    for body in (
        {"reference": "s-1", "phone": "1380000567", "text": "hi"},
        {"reference": "s-1", "phone": "1380000567a", "text": "hi"},
        {"reference": "s-1", "phone": PHONE, "text": ""},
        {"reference": "s-1", "phone": PHONE, "text": "字" * 501},
        {"reference": "", "phone": PHONE, "text": "hi"},
        {"reference": "s-1", "phone": PHONE},
    ):
        status, error = await call(client, "POST", url, body)
        assert status == 400 and "error" in error, body
    assert (await call(client, "GET", f"{sms.base_url}/fake/messages"))[1] == []


async def test_a_bad_environment_knob_stops_the_fake(tmp_path: Path) -> None:
    env = dict(os.environ) | {
        "FAKE_CORE_PORT": str(_free_port()),
        "FAKE_CORE_RECORD_FILE": str(tmp_path / "r.jsonl"),
        "FAKE_CORE_FAIL_RATIO": "0.9",
        "FAKE_CORE_TIMEOUT_RATIO": "0.2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.fakes.core_bank",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), START_TIMEOUT_S)
    assert proc.returncode == 2
    assert b"fail_ratio + timeout_ratio" in stderr


async def test_sms_client_sends_alone_what_the_gateway_refuses_as_a_batch(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    from engine.adapters.sms import Sms, SmsClient

    sms = await fakes.sms()
    gateway = SmsClient(client, sms.base_url, timeout_s=5.0)
    good = [Sms(f"c-{n}", PHONE, f"第{n}条") for n in range(3)]
    assert await gateway.send_batch(good) == [True, True, True]
    # One malformed phone makes the gateway refuse the batch (400): the others still go.
    mixed = [Sms("c-3", PHONE, "x"), Sms("c-4", "123", "x"), Sms("c-5", PHONE, "y")]
    assert await gateway.send_batch(mixed) == [True, False, True]
    _, recorded = await call(client, "GET", f"{sms.base_url}/fake/messages")
    assert [m["reference"] for m in recorded] == ["c-0", "c-1", "c-2", "c-3", "c-5"]


async def test_core_batch_decides_each_item_alone(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core(FAKE_CORE_FAIL_RATIO="0.5", FAKE_CORE_SEED="3")
    url = f"{core.base_url}/core/v1/payments/batch"
    items = [transfer(f"bp-{n}", f"{n + 1}.00") for n in range(10)]
    status, body = await call(client, "POST", url, {"items": items})
    assert status == 200
    answers = body["items"]
    assert [a["reference"] for a in answers] == [f"bp-{n}" for n in range(10)]
    assert {a["status"] for a in answers} == {"succeeded", "failed"}  # both (seed 3)
    book = {r["reference"]: r for r in await records(client, core)}
    for answer in answers:  # each answer is the item's record
        assert book[answer["reference"]]["status"] == answer["status"]
        assert book[answer["reference"]]["core_txn_id"] == answer["core_txn_id"]
    # Sent again, alone or in a batch, an item gets its first outcome; a reference
    # known with another amount is a conflict of that item only.
    status, single = await call(client, "POST", f"{core.base_url}/core/v1/payments", items[0])
    assert single == answers[0]
    again = [items[1], transfer("bp-new"), transfer("bp-2", "999.00")]
    status, body = await call(client, "POST", url, {"items": again})
    assert status == 200
    assert body["items"][0] == answers[1]
    assert body["items"][1]["status"] in ("succeeded", "failed")
    assert body["items"][2] == {"reference": "bp-2", "status": "conflict"}
    assert len(await records(client, core)) == 11


@pytest.mark.parametrize(
    "items",
    [
        [],
        [transfer("bb-1"), transfer("bb-1")],  # a reference twice
        [transfer("bb-2"), {"reference": "bb-3", "card": CARD, "amount": "1.0"}],
        [transfer(f"bb-{n}") for n in range(4, 37)],  # 33 > 32
    ],
)
async def test_a_bad_core_batch_is_refused_whole(
    fakes: Fakes, client: aiohttp.ClientSession, items: list[object]
) -> None:
    core = await fakes.core()
    status, body = await call(
        client, "POST", f"{core.base_url}/core/v1/debits/batch", {"items": items}
    )
    assert status == 400, body
    assert await records(client, core) == []


async def test_core_client_batch_outcomes(fakes: Fakes, client: aiohttp.ClientSession) -> None:
    from engine.adapters.core_bank import CoreBankClient, Outcome, Transfer

    core = await fakes.core(FAKE_CORE_TIMEOUT_HANG_S="1", FAKE_CORE_SEED="5")
    bank = CoreBankClient(client, core.base_url, timeout_s=0.5)
    paid = await bank.move_batch("payment", [Transfer(f"cb-{n}", CARD, 100, "m") for n in range(3)])
    assert [r.outcome for r in paid] == [Outcome.SUCCEEDED] * 3
    # One bad card makes core refuse the batch whole: each item then goes alone and
    # gets its own answer.
    mixed = [Transfer("cb-3", CARD, 100, "m"), Transfer("cb-4", "12", 100, "m")]
    assert [r.outcome for r in await bank.move_batch("debit", mixed)] == [
        Outcome.SUCCEEDED,
        Outcome.FAILED,
    ]
    # A time-out of the call is every item's unknown outcome; inquiry tells the truth.
    await call(client, "POST", f"{core.base_url}/fake/knobs", {"timeout_ratio": 1})
    late = [Transfer(f"cb-t{n}", CARD, 100, "m") for n in range(4)]
    assert {r.outcome for r in await bank.move_batch("payment", late)} == {Outcome.UNKNOWN}
    truths = [await bank.inquire(t.reference) for t in late]
    assert {r.outcome for r in truths} <= {Outcome.SUCCEEDED, Outcome.FAILED}
    # A core that cannot be reached: nothing was sent.
    await core.stop()
    gone = await bank.move_batch("payment", [Transfer("cb-x", CARD, 100, "m")])
    assert [r.outcome for r in gone] == [Outcome.NOT_SENT]

"""The fakes of core banking and the SMS gateway, each a real subprocess on a free port.

Everything goes over HTTP, as the engine's adapters will: no fake module is
imported here. Each test starts its own fakes (tests/fakes_support.py) with a
temporary record file, so knobs set by one test never leak into another. None of
the DB-stack fixtures of conftest.py is used.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path

import aiohttp
import pytest

from tests import fakes_support
from tests.fakes_support import CORE, Fakes, call, metrics, records, set_knobs

fakes = fakes_support.fakes
client = fakes_support.client

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


def transfer(reference: str, amount: str = "1000.00", card: str = CARD) -> dict[str, str]:
    return {"reference": reference, "card": card, "amount": amount, "memo": "test"}


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
    text = await metrics(client, core)
    assert 'fake_core_paid_amount_fen_total{kind="payment"} 124456.0' in text
    assert 'fake_core_requests_total{endpoint="payments",outcome="duplicate"} 8.0' in text


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
    await set_knobs(client, core, fail_ratio=0)
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
    await set_knobs(client, core, fail_ratio=1)
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
    await set_knobs(client, core, fail_ratio=1)
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
    status, knobs = await set_knobs(client, core, fail_ratio=1, latency_ms=300)
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
        {"batch_timeout_mode": "all"},
        {"volume": 11},
    ):
        status, error = await set_knobs(client, core, **bad)
        assert status == 400 and "error" in error, bad
    assert (await call(client, "GET", knobs_url))[1] == knobs
    sms = await fakes.sms()
    for core_only in ({"timeout_ratio": 1}, {"batch_timeout_mode": "whole"}):
        status, error = await set_knobs(client, sms, **core_only)
        assert (status, error["error"]) == (400, "invalid_knobs"), core_only


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
    messages = await records(client, sms)
    assert len(messages) == 1
    assert messages[0]["message_id"] == first["message_id"]
    assert messages[0]["phone_masked"] == "138****5678" and messages[0]["text"] == body["text"]
    assert PHONE not in sms.record_path.read_text()
    by_reference = f"{sms.base_url}/fake/messages?reference="
    assert (await call(client, "GET", by_reference + "sms-1"))[1] == messages
    assert (await call(client, "GET", by_reference + "sms-none"))[1] == []
    text = await metrics(client, sms)
    assert 'fake_sms_messages_total{outcome="accepted"} 1.0' in text
    assert 'fake_sms_messages_total{outcome="duplicate"} 5.0' in text


async def test_sms_failure_sends_nothing_and_a_resend_can_succeed(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    sms = await fakes.sms(FAKE_SMS_FAIL_RATIO="1")
    url = f"{sms.base_url}/sms/v1/send"
    body = {"reference": "sms-f", "phone": PHONE, "text": "hello"}
    assert await call(client, "POST", url, body) == (503, {"status": "failed"})
    assert await records(client, sms) == []
    await set_knobs(client, sms, fail_ratio=0)
    status, accepted = await call(client, "POST", url, body)
    assert status == 200 and accepted["status"] == "accepted"
    assert len(await records(client, sms)) == 1


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
    recorded = await records(client, sms)
    assert [m["reference"] for m in recorded] == ["b-0", "b-1", "b-2", "b-3"]
    await set_knobs(client, sms, fail_ratio=1)
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
    assert len(await records(client, sms)) == 4


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
    assert await records(client, sms) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FAKE_CORE_FAIL_RATIO": "0.9", "FAKE_CORE_TIMEOUT_RATIO": "0.2"},
            b"fail_ratio + timeout_ratio",
        ),
        ({"FAKE_CORE_BATCH_TIMEOUT_MODE": "all"}, b"batch_timeout_mode must be"),
    ],
)
async def test_a_bad_environment_knob_stops_the_fake(
    fakes: Fakes, env: dict[str, str], message: bytes
) -> None:
    returncode, stderr = await fakes.new(CORE, **env).run_until_exit()
    assert returncode == 2 and message in stderr, stderr


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
    recorded = await records(client, sms)
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
    calls: list[tuple[str, str, float]] = []  # what the metrics see (the observer)
    bank = CoreBankClient(
        client, core.base_url, timeout_s=0.5, observe=lambda *call: calls.append(call)
    )
    paid = await bank.move_batch("payment", [Transfer(f"cb-{n}", CARD, 100, "m") for n in range(3)])
    assert [r.outcome for r in paid] == [Outcome.SUCCEEDED] * 3
    assert [c[:2] for c in calls] == [("payment_batch", "answered")]
    # One bad card makes core refuse the batch whole: each item then goes alone and
    # gets its own answer.
    mixed = [Transfer("cb-3", CARD, 100, "m"), Transfer("cb-4", "12", 100, "m")]
    assert [r.outcome for r in await bank.move_batch("debit", mixed)] == [
        Outcome.SUCCEEDED,
        Outcome.FAILED,
    ]
    assert [c[:2] for c in calls[1:]] == [("debit_batch", "answered")] + [("debit", "answered")] * 2
    del calls[:]
    # An item answered "unavailable" (batch_timeout_mode item), or a time-out of the
    # whole call (mode whole), is an unknown outcome; inquiry tells the truth.
    await set_knobs(client, core, timeout_ratio=1)
    for mode in ("item", "whole"):
        await set_knobs(client, core, batch_timeout_mode=mode)
        late = [Transfer(f"cb-{mode}-{n}", CARD, 100, "m") for n in range(4)]
        answers = await bank.move_batch("payment", late)
        assert {r.outcome for r in answers} == {Outcome.UNKNOWN}, mode
        assert {r.reason for r in answers} == {
            "status 'unavailable'" if mode == "item" else "TimeoutError"
        }
        truths = [await bank.inquire(t.reference) for t in late]
        assert {r.outcome for r in truths} <= {Outcome.SUCCEEDED, Outcome.FAILED}
        # The whole-call time-out is a call without an answer, timed to the time-out.
        batch_call = calls[0]
        assert batch_call[:2] == ("payment_batch", "answered" if mode == "item" else "no_answer")
        assert mode == "item" or batch_call[2] >= 0.5
        assert [c[:2] for c in calls[1:]] == [("inquiry", "answered")] * len(late)
        del calls[:]
    # A core that cannot be reached: nothing was sent.
    await core.stop()
    gone = await bank.move_batch("payment", [Transfer("cb-x", CARD, 100, "m")])
    assert [r.outcome for r in gone] == [Outcome.NOT_SENT]
    assert (await bank.inquire("cb-x")).outcome is Outcome.UNKNOWN
    assert [c[:2] for c in calls] == [("payment_batch", "not_sent"), ("inquiry", "not_sent")]


BATCH_SEED = "1"  # six new items draw: time-out, ok, time-out, ok, time-out, ok


async def test_batch_timeout_item_mode_answers_the_others_at_once(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core(
        FAKE_CORE_TIMEOUT_RATIO="0.5", FAKE_CORE_TIMEOUT_HANG_S="5", FAKE_CORE_SEED=BATCH_SEED
    )
    knobs = (await call(client, "GET", f"{core.base_url}/fake/knobs"))[1]
    assert knobs["batch_timeout_mode"] == "item"  # the default
    url = f"{core.base_url}/core/v1/payments/batch"
    items = [transfer(f"bi-{n}", f"{n + 1}.00") for n in range(6)]
    started = time.monotonic()
    status, body = await call(client, "POST", url, {"items": items}, timeout_s=2)
    assert status == 200 and time.monotonic() - started < 1.0  # well under the 5 s hang
    answers = {a["reference"]: a for a in body["items"]}
    assert list(answers) == [item["reference"] for item in items]
    book = {r["reference"]: r for r in await records(client, core)}
    assert set(book) == set(answers)  # every item recorded, the timed-out ones too
    timed_out = {reference for reference, r in book.items() if r["timed_out"]}
    assert timed_out and timed_out != set(book)  # some of each (seed 1)
    assert {book[reference]["status"] for reference in timed_out} == {"succeeded", "failed"}
    for reference, answer in answers.items():
        record = book[reference]
        if reference in timed_out:
            assert answer == {"reference": reference, "status": "unavailable"}
        else:
            assert answer["status"] == record["status"] == "succeeded"
            assert answer["core_txn_id"] == record["core_txn_id"]
        # The outcome was recorded before the answer: inquiry gives the final truth.
        status, inquiry = await call(
            client, "GET", f"{core.base_url}/core/v1/transactions/{reference}"
        )
        assert status == 200
        assert (inquiry["status"], inquiry["core_txn_id"]) == (
            record["status"],
            record["core_txn_id"],
        )
        assert inquiry.get("reason") == record.get("reason")
    # Sent again, a timed-out item is a repeat: its recorded outcome, at once.
    again = next(item for item in items if item["reference"] in timed_out)
    status, body = await call(client, "POST", url, {"items": [again]}, timeout_s=2)
    record = book[again["reference"]]
    assert status == 200
    assert (body["items"][0]["status"], body["items"][0]["core_txn_id"]) == (
        record["status"],
        record["core_txn_id"],
    )
    assert len(await records(client, core)) == 6


async def test_batch_timeout_whole_mode_withholds_the_whole_answer(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core = await fakes.core(
        FAKE_CORE_TIMEOUT_RATIO="0.5",
        FAKE_CORE_TIMEOUT_HANG_S="1",
        FAKE_CORE_SEED=BATCH_SEED,
        FAKE_CORE_BATCH_TIMEOUT_MODE="whole",
    )
    knobs = (await call(client, "GET", f"{core.base_url}/fake/knobs"))[1]
    assert knobs["batch_timeout_mode"] == "whole"
    url = f"{core.base_url}/core/v1/debits/batch"
    items = [transfer(f"bw-{n}", f"{n + 1}.00") for n in range(6)]
    with pytest.raises(TimeoutError):  # nothing comes back before the hang is over
        await call(client, "POST", url, {"items": items}, timeout_s=0.5)
    book = {r["reference"]: r for r in await records(client, core)}
    assert set(book) == {item["reference"] for item in items}  # recorded before the hang
    timed_out = {reference for reference, r in book.items() if r["timed_out"]}
    assert timed_out and timed_out != set(book)  # the same draws as in item mode (seed 1)
    for reference, record in book.items():
        status, inquiry = await call(
            client, "GET", f"{core.base_url}/core/v1/transactions/{reference}"
        )
        assert (status, inquiry["status"]) == (200, record["status"])
    # Waited out, the answer gives every item its outcome, the timed-out ones too.
    await set_knobs(client, core, timeout_ratio=1)
    fresh = [transfer(f"bw-{n}") for n in range(6, 9)]
    started = time.monotonic()
    status, body = await call(client, "POST", url, {"items": [*fresh, items[1]]}, timeout_s=5)
    assert status == 200 and time.monotonic() - started >= 0.9
    book = {r["reference"]: r for r in await records(client, core)}
    for answer in body["items"]:
        assert answer["status"] == book[answer["reference"]]["status"] != "unavailable"
        assert answer["core_txn_id"] == book[answer["reference"]]["core_txn_id"]
    assert all(book[item["reference"]]["timed_out"] for item in fresh)
    # Switched to item mode at run time, the same kind of batch answers at once.
    await set_knobs(client, core, batch_timeout_mode="item")
    started = time.monotonic()
    status, body = await call(
        client, "POST", url, {"items": [transfer("bw-9"), items[1]]}, timeout_s=2
    )
    assert status == 200 and time.monotonic() - started < 0.9
    assert body["items"][0] == {"reference": "bw-9", "status": "unavailable"}
    assert body["items"][1]["status"] == book[items[1]["reference"]]["status"]

"""Fake SMS gateway: accepts text messages for mobile phones, each at most once per reference.

    python -m loadtest.fakes.sms_gateway      FAKE_SMS_HOST:FAKE_SMS_PORT (127.0.0.1:18602)

    POST /sms/v1/send  {"reference", "phone": 11 digits, "text": 1..500 chars}
        -> 200 {"reference", "message_id", "status": "accepted"}
           503 {"status": "failed"}        by FAKE_SMS_FAIL_RATIO: nothing sent, nothing
                                           recorded; resend with the same reference
           400 {"error", "detail"}         refused, nothing recorded
    POST /sms/v1/send-batch  {"messages": [1..32 of the above]}   (批量发送)
        -> 200 {"results": [{"reference", "status": "accepted", "message_id"}
                            | {"reference", "status": "failed"}]}   one per message, in order;
           each message decided as if sent alone (a failed one may be resent)
           400 {"error", "detail"}         the whole batch refused, nothing recorded
    GET  /fake/messages[?reference=R]   GET|POST /fake/knobs   GET /healthz   GET /metrics

    arrive --latency_ms--> draw u in [0,1) --u < fail_ratio--> 503
                                          --otherwise-------> record (fsync) --> 200 accepted

A reference already accepted gets the first answer again (same message_id) and
is not sent again; a repeat that arrives while the first is being decided waits
for it. The record keeps the phone masked (138****5678) and the full text.

Knobs (environment at start-up, or POST /fake/knobs): FAKE_SMS_LATENCY_MS (10),
FAKE_SMS_FAIL_RATIO (0); also FAKE_SMS_SEED and FAKE_SMS_RECORD_FILE
(.run/fake-sms/messages.jsonl). This module imports nothing from `engine/`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from loadtest.fakes import SHANGHAI, BadRequest, Journal, json_response, read_json
from loadtest.fakes.knobs import Knobs
from loadtest.fakes.service import FakeConfig, FakeSpec, OncePerReference

TEXT_CHARS_MAX = 500
B = TypeVar("B", bound=msgspec.Struct)  # a request body
SEND_BATCH_MAX = 32  # 32 messages of 500 Chinese characters stay within BODY_MAX_BYTES

REFERENCE_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
PHONE_PATTERN = r"^[0-9]{11}$"


class SendRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /sms/v1/send."""

    reference: Annotated[str, msgspec.Meta(pattern=REFERENCE_PATTERN)]
    phone: Annotated[str, msgspec.Meta(pattern=PHONE_PATTERN)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_CHARS_MAX)]


class SendResponse(msgspec.Struct, frozen=True):
    reference: str
    message_id: str
    status: Literal["accepted"] = "accepted"


class BatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /sms/v1/send-batch."""

    messages: Annotated[list[SendRequest], msgspec.Meta(min_length=1, max_length=SEND_BATCH_MAX)]


class BatchResult(msgspec.Struct, frozen=True, omit_defaults=True):
    reference: str
    status: Literal["accepted", "failed"]
    message_id: str | None = None


class BatchResponse(msgspec.Struct, frozen=True):
    results: list[BatchResult]


class SmsRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of messages.jsonl and of GET /fake/messages: one accepted message."""

    reference: str
    message_id: str
    phone_masked: str
    text: str
    accepted_at: str  # ISO 8601, +08:00


def mask_phone(phone: str) -> str:
    assert len(phone) == 11 and phone.isdigit()
    return f"{phone[:3]}****{phone[-4:]}"


class SmsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "fake_sms_messages_total",
            "Send requests to the fake SMS gateway by outcome.",
            ["outcome"],
            registry=registry,
        )


class Outbox(OncePerReference[SmsRecord, SmsMetrics, SendRequest]):
    """Accepted messages (`records`) by reference, in order, and the sends still being
    decided. `decide_once(bodies)` -> (the accepted message, or None when the gateway
    failed it, and whether it is a repeat) for each message."""

    def __init__(
        self, journal: Journal[SmsRecord], config: FakeConfig, metrics: SmsMetrics
    ) -> None:
        super().__init__(journal, config, metrics)
        self._message_seq = max((int(m.message_id[2:]) for m in self.records), default=0)

    def _decide(self, knobs: Knobs, item: SendRequest) -> SmsRecord | None:
        """None: the gateway failed the message; nothing sent, nothing recorded."""
        return None if self.rng.random() < knobs.fail_ratio else self._accept(item)

    def _accept(self, body: SendRequest) -> SmsRecord:
        self._message_seq += 1
        return SmsRecord(
            reference=body.reference,
            message_id=f"SM{self._message_seq:010d}",
            phone_masked=mask_phone(body.phone),
            text=body.text,
            accepted_at=dt.datetime.now(SHANGHAI).isoformat(timespec="milliseconds"),
        )


OUTBOX = web.AppKey("outbox", Outbox)

_send_decoder = msgspec.json.Decoder(SendRequest)
_batch_decoder = msgspec.json.Decoder(BatchRequest)


async def _read(request: web.Request, decoder: msgspec.json.Decoder[B]) -> B:
    """The request's body; a refused one is counted as `bad_request`."""
    try:
        return await read_json(request, decoder)
    except msgspec.MsgspecError:
        request.app[OUTBOX].metrics.messages.labels("bad_request").inc()
        raise


async def _decide(request: web.Request, bodies: list[SendRequest]) -> list[SmsRecord | None]:
    """Send the messages (None: the gateway failed one), each counted by outcome."""
    outbox = request.app[OUTBOX]
    answers = await outbox.decide_once(bodies)
    counter = outbox.metrics.messages
    for message, repeat in answers:
        counter.labels("failed" if message is None else "duplicate" if repeat else "accepted").inc()
    return [message for message, _ in answers]


async def send(request: web.Request) -> web.StreamResponse:
    [message] = await _decide(request, [await _read(request, _send_decoder)])
    if message is None:
        return json_response({"status": "failed"}, 503)
    return json_response(SendResponse(message.reference, message.message_id))


async def send_batch(request: web.Request) -> web.StreamResponse:
    body = await _read(request, _batch_decoder)
    if len({m.reference for m in body.messages}) != len(body.messages):
        request.app[OUTBOX].metrics.messages.labels("bad_request").inc()
        raise BadRequest("duplicate_reference", "a reference appears twice in the batch")
    decided = await _decide(request, body.messages)
    results = [
        BatchResult(m.reference, "failed")
        if message is None
        else BatchResult(m.reference, "accepted", message.message_id)
        for m, message in zip(body.messages, decided, strict=True)
    ]
    return json_response(BatchResponse(results))


FAKE: FakeSpec[SmsRecord, SmsMetrics, Outbox] = FakeSpec(
    name="fake SMS gateway",
    env_prefix="FAKE_SMS",
    default_port=18602,
    default_record_file=".run/fake-sms/messages.jsonl",
    default_knobs=Knobs(latency_ms=10),
    supported_knobs=frozenset({"latency_ms", "fail_ratio"}),
    record_type=SmsRecord,
    records_route="/fake/messages",
    state_key=OUTBOX,
    new_metrics=SmsMetrics,
    new_state=Outbox,
    routes=(web.post("/sms/v1/send", send), web.post("/sms/v1/send-batch", send_batch)),
)

if __name__ == "__main__":
    FAKE.main()

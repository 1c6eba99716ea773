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
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from loadtest.fakes import (
    BODY_MAX_BYTES,
    BadRequest,
    Journal,
    add_common_routes,
    error_middleware,
    json_response,
    read_json,
    serve_main,
)
from loadtest.fakes.knobs import (
    Knobs,
    env_path,
    env_port,
    env_seed,
    env_text,
    knobs_from_env,
)

ENV_PREFIX = "FAKE_SMS"
DEFAULT_KNOBS = Knobs(latency_ms=10)
SUPPORTED_KNOBS = frozenset({"latency_ms", "fail_ratio"})
SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
DUPLICATE_WAIT_S_MAX = 60.0
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


class SmsConfig(msgspec.Struct, frozen=True):
    host: str
    port: int
    record_path: Path
    knobs: Knobs
    seed: int | None


def config_from_env(environ: Mapping[str, str]) -> SmsConfig:
    return SmsConfig(
        host=env_text(environ, "FAKE_SMS_HOST", "127.0.0.1"),
        port=env_port(environ, "FAKE_SMS_PORT", 18602),
        record_path=env_path(environ, "FAKE_SMS_RECORD_FILE", ".run/fake-sms/messages.jsonl"),
        knobs=knobs_from_env(ENV_PREFIX, DEFAULT_KNOBS, SUPPORTED_KNOBS, environ),
        seed=env_seed(environ, "FAKE_SMS_SEED"),
    )


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


class Outbox:
    """Accepted messages by reference, in order, and the sends still being decided."""

    def __init__(self, journal: Journal[SmsRecord], knobs: Knobs, seed: int | None) -> None:
        self.knobs = knobs
        self._journal = journal
        self._rng = random.Random(seed)
        self.messages: list[SmsRecord] = journal.load()
        self._by_reference = {message.reference: message for message in self.messages}
        assert len(self._by_reference) == len(self.messages), "one message per reference"
        self._in_flight: dict[str, asyncio.Future[SmsRecord | None]] = {}
        self._message_seq = max((int(m.message_id[2:]) for m in self.messages), default=0)

    async def send(self, body: SendRequest) -> tuple[SmsRecord | None, bool]:
        """(the accepted message or None when the gateway failed, whether it is a repeat)."""
        [answer] = await self.send_many([body])
        return answer

    async def send_many(self, bodies: list[SendRequest]) -> list[tuple[SmsRecord | None, bool]]:
        """`send` for each message (references distinct), each decided as if sent alone
        but all with one latency wait and one journal write: a batch costs the machine
        the fake shares about what one send does."""
        loop = asyncio.get_running_loop()
        fresh: dict[str, asyncio.Future[SmsRecord | None]] = {}
        for body in bodies:
            if body.reference not in self._by_reference and body.reference not in self._in_flight:
                fresh[body.reference] = self._in_flight[body.reference] = loop.create_future()
        repeats = asyncio.gather(
            *(self._repeat(b.reference) for b in bodies if b.reference not in fresh)
        )
        decided: dict[str, SmsRecord | None] = {}
        try:
            if fresh:
                knobs = self.knobs
                await asyncio.sleep(knobs.latency_ms / 1000)
                for body in bodies:
                    if body.reference in fresh:
                        failed = self._rng.random() < knobs.fail_ratio
                        decided[body.reference] = None if failed else self._accept(body)
                accepted = [m for m in decided.values() if m is not None]
                if accepted:
                    await self._journal.append_many(accepted)
                for message in accepted:
                    self.messages.append(message)
                    self._by_reference[message.reference] = message
                for reference, answer in decided.items():
                    fresh[reference].set_result(answer)
        except BaseException:
            repeats.cancel()
            raise
        finally:
            for reference, future in fresh.items():
                del self._in_flight[reference]
                if not future.done():
                    future.cancel()
        repeated = iter(await repeats)
        return [
            (decided[b.reference], False) if b.reference in fresh else (next(repeated), True)
            for b in bodies
        ]

    def by_reference(self, reference: str) -> SmsRecord | None:
        return self._by_reference.get(reference)

    async def _repeat(self, reference: str) -> SmsRecord | None:
        """The first answer; a repeat of a send still in flight shares its fate."""
        future = self._in_flight.get(reference)
        await asyncio.sleep(self.knobs.latency_ms / 1000)
        message = self._by_reference.get(reference)
        if message is not None:
            return message
        assert future is not None, "a reference is accepted or in flight"
        await asyncio.wait([future], timeout=DUPLICATE_WAIT_S_MAX)
        return future.result() if future.done() and not future.cancelled() else None

    def _accept(self, body: SendRequest) -> SmsRecord:
        self._message_seq += 1
        return SmsRecord(
            reference=body.reference,
            message_id=f"SM{self._message_seq:010d}",
            phone_masked=mask_phone(body.phone),
            text=body.text,
            accepted_at=dt.datetime.now(SHANGHAI).isoformat(timespec="milliseconds"),
        )


CONFIG = web.AppKey("config", SmsConfig)
OUTBOX = web.AppKey("outbox", Outbox)
METRICS = web.AppKey("metrics", SmsMetrics)

_send_decoder = msgspec.json.Decoder(SendRequest)
_batch_decoder = msgspec.json.Decoder(BatchRequest)


async def _read(request: web.Request, decoder: msgspec.json.Decoder[B]) -> B:
    """The request's body; a refused one is counted as `bad_request`."""
    try:
        return await read_json(request, decoder)
    except msgspec.MsgspecError:
        request.app[METRICS].messages.labels("bad_request").inc()
        raise


async def _decide(request: web.Request, bodies: list[SendRequest]) -> list[SmsRecord | None]:
    """Send the messages (None: the gateway failed one), each counted by outcome."""
    answers = await request.app[OUTBOX].send_many(bodies)
    counter = request.app[METRICS].messages
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
        request.app[METRICS].messages.labels("bad_request").inc()
        raise BadRequest("duplicate_reference", "a reference appears twice in the batch")
    decided = await _decide(request, body.messages)
    results = [
        BatchResult(m.reference, "failed")
        if message is None
        else BatchResult(m.reference, "accepted", message.message_id)
        for m, message in zip(body.messages, decided, strict=True)
    ]
    return json_response(BatchResponse(results))


async def fake_messages(request: web.Request) -> web.StreamResponse:
    """Every accepted message, or with `?reference=R` the one sent under R (a test or a
    load run reading the code a customer received)."""
    reference = request.query.get("reference")
    if reference is None:
        return json_response(request.app[OUTBOX].messages)
    found = request.app[OUTBOX].by_reference(reference)
    return json_response([] if found is None else [found])


async def _outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    journal = Journal(config.record_path, SmsRecord)
    app[OUTBOX] = Outbox(journal, config.knobs, config.seed)
    yield
    await journal.close()


def create_app(config: SmsConfig, registry: CollectorRegistry) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=BODY_MAX_BYTES)
    app[CONFIG] = config
    app[METRICS] = SmsMetrics(registry)
    app.cleanup_ctx.append(_outbox_ctx)
    app.router.add_post("/sms/v1/send", send)
    app.router.add_post("/sms/v1/send-batch", send_batch)
    app.router.add_get("/fake/messages", fake_messages)
    add_common_routes(app, OUTBOX, SUPPORTED_KNOBS, registry)
    return app


def main() -> None:
    serve_main("fake SMS gateway", config_from_env, create_app)


if __name__ == "__main__":
    main()

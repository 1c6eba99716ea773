"""Fake core banking: pays to cards (disbursements) and debits cards (repayments).

    python -m loadtest.fakes.core_bank        FAKE_CORE_HOST:FAKE_CORE_PORT (127.0.0.1:18601)

    POST /core/v1/payments   {"reference", "card", "amount": "1234.56", "memo"?}
    POST /core/v1/debits          -> 200 {"reference", "status": "succeeded"|"failed",
                                          "core_txn_id", "reason"?}
                                     400 {"error", "detail"}   refused, nothing recorded
                                     409 {"error": "reference_conflict", ...}
                                         (reference known with another kind/amount/card)
    POST /core/v1/payments/batch   {"items": [1..32 of the above, references unique]}
    POST /core/v1/debits/batch          (批量): each item decided as if sent alone, all at
                                  once -> 200 {"items": [one answer per item, in order:
                                          the single answer above, or
                                          {"reference", "status": "conflict"|"unavailable"}]}
                                     400 the batch refused whole (an invalid item,
                                         references repeated): nothing recorded
                                  An item that draws a time-out, by
                                  FAKE_CORE_BATCH_TIMEOUT_MODE (knob batch_timeout_mode):
                                    item  (default) the batch is answered at once, that
                                          item as {"reference", "status": "unavailable"}
                                          (outcome unknown to the caller; an inquiry
                                          gives the outcome recorded for it)
                                    whole the whole answer is withheld timeout_hang_s,
                                          then every item answered with its outcome
    GET  /core/v1/transactions/{reference}
                                  -> 200 {"reference", "kind", "status", "amount",
                                          "core_txn_id", "booked_at", "reason"?}
                                     200 {"reference", "kind", "status": "processing", "amount"}
                                         (received, outcome not decided yet: ask again)
                                     404 {"status": "not_found", "reference"}   never received
                                     503 {"status": "unavailable"}   FAKE_CORE_INQUIRY_FAIL_RATIO
    GET  /core/v1/statements/{YYYY-MM-DD}   text/csv, Asia/Shanghai booking date:
           reference,kind,status,amount,card_last4,core_txn_id,booked_at
    GET  /fake/records   GET|POST /fake/knobs   GET /healthz   GET /metrics

Life of a new reference (a repeated one waits for and returns the first outcome):

    arrive --latency_ms--> draw u in [0,1)
        u < fail_ratio                   failed (CARD_FROZEN, INSUFFICIENT_FUNDS, ...)
        u < fail_ratio + timeout_ratio   "time-out": half the time booked succeeded,
                                         half the time failed (TIMEOUT_NOT_BOOKED);
                                         the answer is then withheld timeout_hang_s
                                         (a batch item: see batch_timeout_mode above)
        otherwise                        succeeded
    --> appended to the record (fsync) --> answered

The outcome is recorded before any hang or answer, so an inquiry after the
caller's time-out (or an item's "unavailable") always tells the final truth. A
reference is decided once: at most one record per reference, so money moves at
most once per reference.

Knobs (environment at start-up, or POST /fake/knobs): FAKE_CORE_LATENCY_MS (20),
FAKE_CORE_FAIL_RATIO (0), FAKE_CORE_TIMEOUT_RATIO (0), FAKE_CORE_TIMEOUT_HANG_S (30),
FAKE_CORE_INQUIRY_FAIL_RATIO (0), FAKE_CORE_BATCH_TIMEOUT_MODE (item); also
FAKE_CORE_SEED and FAKE_CORE_RECORD_FILE (.run/fake-core/records.jsonl). This
module imports nothing from `engine/`.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import enum
import io
import re
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from loadtest.fakes import SHANGHAI, BadRequest, Journal, json_response, read_json
from loadtest.fakes.knobs import Knobs
from loadtest.fakes.service import FakeConfig, FakeSpec, OncePerReference

STATEMENT_HEADER = ("reference", "kind", "status", "amount", "card_last4", "core_txn_id")
STATEMENT_COLUMNS = (*STATEMENT_HEADER, "booked_at")

REFERENCE_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
CARD_PATTERN = r"^[0-9]{12,19}$"
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,12})\.[0-9]{2}$"
_reference_re = re.compile(REFERENCE_PATTERN)
_date_re = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

Kind = Literal["payment", "debit"]
KINDS: tuple[Kind, ...] = ("payment", "debit")
FAILURE_REASONS: dict[Kind, tuple[str, ...]] = {
    "payment": ("CARD_FROZEN", "ACCOUNT_CLOSED", "CARD_NOT_FOUND"),
    "debit": ("INSUFFICIENT_FUNDS", "CARD_FROZEN"),
}
TIMEOUT_NOT_BOOKED = "TIMEOUT_NOT_BOOKED"


class TransferRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /core/v1/payments and /core/v1/debits."""

    reference: Annotated[str, msgspec.Meta(pattern=REFERENCE_PATTERN)]
    card: Annotated[str, msgspec.Meta(pattern=CARD_PATTERN)]
    amount: Annotated[str, msgspec.Meta(pattern=AMOUNT_PATTERN)]
    memo: Annotated[str, msgspec.Meta(max_length=140)] = ""


class TransferResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    reference: str
    status: Literal["succeeded", "failed"]
    core_txn_id: str
    reason: str | None = None


TRANSFER_BATCH_MAX = 32


class BatchTransferRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /core/v1/payments/batch and /core/v1/debits/batch."""

    items: Annotated[
        list[TransferRequest], msgspec.Meta(min_length=1, max_length=TRANSFER_BATCH_MAX)
    ]


class ItemNotDone(msgspec.Struct, frozen=True):
    """A batch item with no outcome of its own: the caller asks again later."""

    reference: str
    status: Literal["conflict", "unavailable"]


class BatchTransferResponse(msgspec.Struct, frozen=True):
    items: list[TransferResponse | ItemNotDone]


class InquiryResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    reference: str
    kind: Kind
    status: Literal["succeeded", "failed", "processing"]
    amount: str
    core_txn_id: str | None = None
    booked_at: str | None = None
    reason: str | None = None


class CoreRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of the fake's ledger (records.jsonl) and of GET /fake/records."""

    reference: str
    kind: Kind
    status: Literal["succeeded", "failed"]
    amount: str
    amount_fen: int
    card_last4: str
    core_txn_id: str
    booked_at: str  # ISO 8601, +08:00
    reason: str | None = None
    # The caller got no outcome: the answer was withheld for timeout_hang_s (or, a
    # batch item in batch_timeout_mode "item", answered "unavailable").
    timed_out: bool = False
    memo: str = ""


class Order(msgspec.Struct, frozen=True):
    """A validated transfer request; the card is kept only as its last four digits."""

    reference: str
    kind: Kind
    amount: str
    amount_fen: int
    card_last4: str
    memo: str


class Decision(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT_BOOKED = "timeout_booked"
    TIMEOUT_NOT_BOOKED = "timeout_not_booked"


Transferred = tuple[CoreRecord, Decision | None]  # the record; the decision, None for a repeat


class ReferenceConflict(Exception):
    """A known reference sent again with another kind, amount or card."""


class FirstAttemptLost(Exception):
    """A repeat waited for the first attempt, which ended without an outcome (shutdown)."""


def decide(knobs: Knobs, draw_outcome: float, draw_booked: float) -> Decision:
    """Pure: the outcome of a new reference from two uniform draws in [0, 1)."""
    assert 0.0 <= draw_outcome < 1.0 and 0.0 <= draw_booked < 1.0
    if draw_outcome < knobs.fail_ratio:
        return Decision.FAILED
    if draw_outcome < knobs.fail_ratio + knobs.timeout_ratio:
        return Decision.TIMEOUT_BOOKED if draw_booked < 0.5 else Decision.TIMEOUT_NOT_BOOKED
    return Decision.SUCCEEDED


def decision_of(record: CoreRecord) -> Decision:
    """The decision `record` was booked from (see `CoreBook._book`)."""
    if record.timed_out:
        booked = record.status == "succeeded"
        return Decision.TIMEOUT_BOOKED if booked else Decision.TIMEOUT_NOT_BOOKED
    return Decision.SUCCEEDED if record.status == "succeeded" else Decision.FAILED


def parse_order(kind: Kind, body: TransferRequest) -> Order:
    integer, _, fraction = body.amount.partition(".")
    amount_fen = int(integer) * 100 + int(fraction)
    if amount_fen <= 0:
        raise BadRequest("invalid_amount", "amount must be greater than zero")
    return Order(body.reference, kind, body.amount, amount_fen, body.card[-4:], body.memo)


def statement_csv(records: list[CoreRecord], day: dt.date) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(STATEMENT_COLUMNS)
    prefix = day.isoformat()
    for record in records:
        if record.booked_at.startswith(prefix):
            writer.writerow(
                [*(getattr(record, name) for name in STATEMENT_HEADER), record.booked_at]
            )
    return out.getvalue()


class CoreMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "fake_core_requests_total",
            "Requests to the fake core by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.paid_amount_fen = Counter(
            "fake_core_paid_amount_fen_total",
            "Money the fake core moved (succeeded records), in fen.",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            self.paid_amount_fen.labels(kind)  # both series exist from the start, at zero


class CoreBook(OncePerReference[CoreRecord, CoreMetrics, Order]):
    """The fake's state: every record by reference, in booking order, and the in-flight ones."""

    def __init__(
        self, journal: Journal[CoreRecord], config: FakeConfig, metrics: CoreMetrics
    ) -> None:
        super().__init__(journal, config, metrics)
        self._txn_seq = max((int(r.core_txn_id[2:]) for r in self.records), default=0)

    def lookup(self, reference: str) -> CoreRecord | Order | None:
        """The record, or the order still being decided, or None when never received."""
        record = self.by_reference.get(reference)
        return record if record is not None else self.in_flight(reference)

    async def transfer_many(self, orders: list[Order]) -> list[Transferred | Exception]:
        """The outcome of each order (references distinct), each decided as if sent
        alone (`decide_once`); Decision is None for a repeat. A repeat with no outcome
        of its own gets ReferenceConflict or FirstAttemptLost in its place."""
        outcomes: list[Transferred | Exception] = []
        for order, (record, repeat) in zip(orders, await self.decide_once(orders), strict=True):
            if record is None:  # only a repeat: every new order is recorded
                outcomes.append(FirstAttemptLost(order.reference))
            elif not repeat:
                if record.status == "succeeded":
                    self.metrics.paid_amount_fen.labels(record.kind).inc(record.amount_fen)
                outcomes.append((record, decision_of(record)))
            elif (record.kind, record.amount_fen, record.card_last4) != (
                order.kind,
                order.amount_fen,
                order.card_last4,
            ):
                outcomes.append(ReferenceConflict(order.reference))
            else:
                outcomes.append((record, None))
        return outcomes

    def _decide(self, knobs: Knobs, item: Order) -> CoreRecord:
        return self._book(item, decide(knobs, self.rng.random(), self.rng.random()))

    def _book(self, order: Order, decision: Decision) -> CoreRecord:
        self._txn_seq += 1
        succeeded = decision in (Decision.SUCCEEDED, Decision.TIMEOUT_BOOKED)
        reason: str | None = None
        if decision is Decision.FAILED:
            reason = self.rng.choice(FAILURE_REASONS[order.kind])
        elif decision is Decision.TIMEOUT_NOT_BOOKED:
            reason = TIMEOUT_NOT_BOOKED
        return CoreRecord(
            reference=order.reference,
            kind=order.kind,
            status="succeeded" if succeeded else "failed",
            amount=order.amount,
            amount_fen=order.amount_fen,
            card_last4=order.card_last4,
            core_txn_id=f"CT{self._txn_seq:010d}",
            booked_at=dt.datetime.now(SHANGHAI).isoformat(timespec="milliseconds"),
            reason=reason,
            timed_out=decision in (Decision.TIMEOUT_BOOKED, Decision.TIMEOUT_NOT_BOOKED),
            memo=order.memo,
        )

    def inquiry_fails(self) -> bool:
        """Drawn only when the ratio is set, so inquiries never shift a seeded run's outcomes."""
        ratio = self.knobs.inquiry_fail_ratio
        return ratio > 0 and self.rng.random() < ratio


BOOK = web.AppKey("book", CoreBook)

_transfer_decoder = msgspec.json.Decoder(TransferRequest)
_batch_decoder = msgspec.json.Decoder(BatchTransferRequest)
_TIMEOUTS = (Decision.TIMEOUT_BOOKED, Decision.TIMEOUT_NOT_BOOKED)


async def _decided(
    book: CoreBook, endpoint: str, orders: list[Order]
) -> list[tuple[TransferResponse | ItemNotDone, bool]]:
    """Each order's answer, and whether it drew a time-out (its answer is withheld)."""
    answers: list[tuple[TransferResponse | ItemNotDone, bool]] = []
    for order, outcome in zip(orders, await book.transfer_many(orders), strict=True):
        if isinstance(outcome, Exception):
            status: Literal["conflict", "unavailable"] = (
                "conflict" if isinstance(outcome, ReferenceConflict) else "unavailable"
            )
            book.metrics.requests.labels(endpoint, status).inc()
            answers.append((ItemNotDone(order.reference, status), False))
            continue
        record, decision = outcome
        outcome_label = "duplicate" if decision is None else decision.value
        book.metrics.requests.labels(endpoint, outcome_label).inc()
        answer = TransferResponse(
            record.reference, record.status, record.core_txn_id, record.reason
        )
        answers.append((answer, decision in _TIMEOUTS))
    return answers


async def _transfer(request: web.Request, kind: Kind) -> web.StreamResponse:
    book = request.app[BOOK]
    endpoint = f"{kind}s"
    try:
        order = parse_order(kind, await read_json(request, _transfer_decoder))
    except (BadRequest, msgspec.MsgspecError):
        book.metrics.requests.labels(endpoint, "bad_request").inc()
        raise
    knobs = book.knobs  # as at arrival: the hang below is the one this request drew
    [(answer, timed_out)] = await _decided(book, endpoint, [order])
    if isinstance(answer, ItemNotDone):
        if answer.status == "unavailable":
            return json_response({"status": "unavailable"}, 503)
        detail = "reference already used with another kind, amount or card"
        return json_response(
            {"error": "reference_conflict", "reference": order.reference, "detail": detail}, 409
        )
    if timed_out:
        await asyncio.sleep(knobs.timeout_hang_s)
    return json_response(answer)


async def _transfer_batch(request: web.Request, kind: Kind) -> web.StreamResponse:
    book = request.app[BOOK]
    endpoint = f"{kind}s_batch"
    try:
        body = await read_json(request, _batch_decoder)
        orders = [parse_order(kind, item) for item in body.items]
        if len({order.reference for order in orders}) != len(orders):
            raise BadRequest("duplicate_reference", "each reference at most once per batch")
    except (BadRequest, msgspec.MsgspecError):
        book.metrics.requests.labels(endpoint, "bad_request").inc()
        raise
    knobs = book.knobs  # as at arrival, as for a single transfer
    decided = await _decided(book, endpoint, orders)  # recorded before any answer
    if knobs.batch_timeout_mode == "item":
        return json_response(
            BatchTransferResponse(
                [
                    ItemNotDone(answer.reference, "unavailable") if timed_out else answer
                    for answer, timed_out in decided
                ]
            )
        )
    if any(timed_out for _, timed_out in decided):
        await asyncio.sleep(knobs.timeout_hang_s)
    return json_response(BatchTransferResponse([answer for answer, _ in decided]))


async def payments(request: web.Request) -> web.StreamResponse:
    return await _transfer(request, "payment")


async def debits(request: web.Request) -> web.StreamResponse:
    return await _transfer(request, "debit")


async def payments_batch(request: web.Request) -> web.StreamResponse:
    return await _transfer_batch(request, "payment")


async def debits_batch(request: web.Request) -> web.StreamResponse:
    return await _transfer_batch(request, "debit")


def _inquiry_answer(found: CoreRecord | Order) -> InquiryResponse:
    if isinstance(found, Order):
        return InquiryResponse(found.reference, found.kind, "processing", found.amount)
    return InquiryResponse(
        found.reference,
        found.kind,
        found.status,
        found.amount,
        found.core_txn_id,
        found.booked_at,
        found.reason,
    )


async def transaction(request: web.Request) -> web.StreamResponse:
    book = request.app[BOOK]
    reference = request.match_info["reference"]
    if _reference_re.match(reference) is None:
        book.metrics.requests.labels("inquiry", "bad_request").inc()
        raise BadRequest("invalid_reference", f"reference must match {REFERENCE_PATTERN}")
    await asyncio.sleep(book.knobs.latency_ms / 1000)
    if book.inquiry_fails():
        book.metrics.requests.labels("inquiry", "unavailable").inc()
        return json_response({"status": "unavailable"}, 503)
    found = book.lookup(reference)
    if found is None:
        book.metrics.requests.labels("inquiry", "not_found").inc()
        return json_response({"status": "not_found", "reference": reference}, 404)
    answer = _inquiry_answer(found)
    book.metrics.requests.labels("inquiry", answer.status).inc()
    return json_response(answer)


async def statement(request: web.Request) -> web.StreamResponse:
    book = request.app[BOOK]
    text = request.match_info["day"]
    try:
        day = dt.date.fromisoformat(text) if _date_re.match(text) else None
    except ValueError:
        day = None
    if day is None:
        book.metrics.requests.labels("statement", "bad_request").inc()
        raise BadRequest("invalid_date", "the statement date must be YYYY-MM-DD")
    await asyncio.sleep(book.knobs.latency_ms / 1000)
    book.metrics.requests.labels("statement", "ok").inc()
    return web.Response(text=statement_csv(book.records, day), content_type="text/csv")


FAKE: FakeSpec[CoreRecord, CoreMetrics, CoreBook] = FakeSpec(
    name="fake core banking",
    env_prefix="FAKE_CORE",
    default_port=18601,
    default_record_file=".run/fake-core/records.jsonl",
    default_knobs=Knobs(latency_ms=20, timeout_hang_s=30.0),
    supported_knobs=frozenset(
        {
            "latency_ms",
            "fail_ratio",
            "timeout_ratio",
            "timeout_hang_s",
            "inquiry_fail_ratio",
            "batch_timeout_mode",
        }
    ),
    record_type=CoreRecord,
    records_route="/fake/records",
    state_key=BOOK,
    new_metrics=CoreMetrics,
    new_state=CoreBook,
    routes=(
        web.post("/core/v1/payments", payments),
        web.post("/core/v1/debits", debits),
        web.post("/core/v1/payments/batch", payments_batch),
        web.post("/core/v1/debits/batch", debits_batch),
        web.get("/core/v1/transactions/{reference}", transaction),
        web.get("/core/v1/statements/{day}", statement),
    ),
)

if __name__ == "__main__":
    FAKE.main()

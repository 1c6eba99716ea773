"""Core banking: pay to a card, debit a card, status inquiry, the day's statement.

    POST /core/v1/payments        {reference, card, amount, memo}
                                  -> {reference, status, core_txn_id?, reason?}
    POST /core/v1/debits          same shape
    POST /core/v1/payments/batch  {items: [1..32 of the above]} -> {items: [answer per item]}
    POST /core/v1/debits/batch    (a core without them, or refusing a batch whole: each
                                  item is sent alone instead)
    GET  /core/v1/transactions/R  -> {status: succeeded|failed, ...} | 404 not found
    GET  /core/v1/statements/D    -> CSV: reference,kind,status,amount,card_last4,
                                          core_txn_id,booked_at

What an answer means for the money:

    200 succeeded / failed      definite
    400 / 422                   definite refusal: nothing moved (FAILED)
    could not connect           the request never left: NOT_SENT, safe to send later
    time-out, 5xx, broken reply UNKNOWN: core may have acted; resolve by inquiry only
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import enum
import io
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import aiohttp
import msgspec

from ledger.money import format_fen, parse_amount


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOT_SENT = "not_sent"
    NOT_FOUND = "not_found"


TRANSFER_BATCH_MAX = 32
MoveKind = Literal["payment", "debit"]


class Transfer(msgspec.Struct, frozen=True):
    """One payment to, or debit from, a card."""

    reference: str
    card: str
    amount_fen: int
    memo: str


class CoreResult(msgspec.Struct, frozen=True):
    outcome: Outcome
    core_txn_id: str | None = None
    reason: str | None = None


class StatementRow(msgspec.Struct, frozen=True):
    reference: str
    kind: str
    status: str
    amount_fen: int
    core_txn_id: str


class _Answer(msgspec.Struct):
    status: str
    reference: str | None = None
    core_txn_id: str | None = None
    reason: str | None = None


class _BatchAnswer(msgspec.Struct):
    items: list[_Answer]


class CoreBank(Protocol):
    async def pay(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult: ...
    async def debit(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult: ...
    async def move_batch(
        self, kind: MoveKind, transfers: Sequence[Transfer]
    ) -> list[CoreResult]: ...
    async def inquire(self, reference: str) -> CoreResult: ...
    async def statement(self, day: dt.date) -> list[StatementRow]: ...


_answer_decoder = msgspec.json.Decoder(_Answer)
_batch_answer_decoder = msgspec.json.Decoder(_BatchAnswer)
_PATHS: dict[MoveKind, str] = {"payment": "/core/v1/payments", "debit": "/core/v1/debits"}


def _result(answer: _Answer) -> CoreResult:
    if answer.status == "succeeded":
        return CoreResult(Outcome.SUCCEEDED, answer.core_txn_id)
    if answer.status == "failed":
        return CoreResult(Outcome.FAILED, answer.core_txn_id, answer.reason or "FAILED")
    return CoreResult(Outcome.UNKNOWN, reason=f"status {answer.status!r}")


def _wire(transfer: Transfer) -> dict[str, str]:
    return {
        "reference": transfer.reference,
        "card": transfer.card,
        "amount": format_fen(transfer.amount_fen),
        "memo": transfer.memo,
    }


# (call, result, seconds) of each transfer or inquiry call: the process's metrics (`engine.runtime`
# sits above the adapters, so it is handed in). result: answered, not_sent, no_answer.
CallObserver = Callable[[str, str, float], None]


def _unobserved(call: str, result: str, seconds: float) -> None:
    pass


class CoreBankClient:
    """The HTTP adapter. `timeout_s` bounds every call, connect included."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout_s: float,
        observe: CallObserver = _unobserved,
    ) -> None:
        assert timeout_s > 0
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._observe = observe

    async def pay(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult:
        return await self._move("payment", Transfer(reference, card, amount_fen, memo))

    async def debit(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult:
        return await self._move("debit", Transfer(reference, card, amount_fen, memo))

    async def move_batch(self, kind: MoveKind, transfers: Sequence[Transfer]) -> list[CoreResult]:
        """Each transfer's result, in order, from one call for up to TRANSFER_BATCH_MAX.

        The call's own failure is every item's: could not connect, NOT_SENT;
        time-out, 5xx or a broken answer, UNKNOWN (each resolved by inquiry). A batch
        refused whole (400/422: nothing recorded) or not supported (404/405) is sent
        item by item instead, so each item gets its own answer."""
        assert 0 < len(transfers) <= TRANSFER_BATCH_MAX, len(transfers)
        body = {"items": [_wire(transfer) for transfer in transfers]}
        path = _PATHS[kind] + "/batch"
        status, raw, failed = await self._send(f"{kind}_batch", "POST", path, body)
        if failed is not None:
            return [failed] * len(transfers)
        if status in (400, 404, 405, 422):
            return list(await asyncio.gather(*(self._move(kind, t) for t in transfers)))
        if status != 200:
            return [CoreResult(Outcome.UNKNOWN, reason=f"HTTP_{status}")] * len(transfers)
        try:
            answers = _batch_answer_decoder.decode(raw).items
        except msgspec.DecodeError:
            answers = []
        if len(answers) != len(transfers):
            return [CoreResult(Outcome.UNKNOWN, reason="UNREADABLE_ANSWER")] * len(transfers)
        return [
            _result(answer)
            if answer.reference == transfer.reference
            else CoreResult(Outcome.UNKNOWN, reason="ANSWER_FOR_ANOTHER_REFERENCE")
            for transfer, answer in zip(transfers, answers, strict=True)
        ]

    async def _move(self, kind: MoveKind, transfer: Transfer) -> CoreResult:
        status, raw, failed = await self._send(kind, "POST", _PATHS[kind], _wire(transfer))
        if failed is not None:
            return failed
        if status in (400, 422):
            return CoreResult(Outcome.FAILED, reason=f"REFUSED_{status}")
        if status != 200:
            return CoreResult(Outcome.UNKNOWN, reason=f"HTTP_{status}")
        try:
            return _result(_answer_decoder.decode(raw))
        except msgspec.DecodeError:
            return CoreResult(Outcome.UNKNOWN, reason="UNREADABLE_ANSWER")

    async def _send(
        self, call: str, method: str, path: str, body: object = None
    ) -> tuple[int, bytes, CoreResult | None]:
        """(status, body, None), or the outcome of a call that got no answer; each call
        timed for the observer."""
        started = time.perf_counter()
        result = "no_answer"
        try:
            async with self._session.request(
                method, self._base_url + path, json=body, timeout=self._timeout
            ) as resp:
                answer = resp.status, await resp.read(), None
                result = "answered"
                return answer
        except aiohttp.ClientConnectorError as exc:
            result = "not_sent"
            return 0, b"", CoreResult(Outcome.NOT_SENT, reason=type(exc).__name__)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return 0, b"", CoreResult(Outcome.UNKNOWN, reason=type(exc).__name__)
        finally:
            self._observe(call, result, time.perf_counter() - started)

    async def inquire(self, reference: str) -> CoreResult:
        status, raw, failed = await self._send(
            "inquiry", "GET", f"/core/v1/transactions/{reference}"
        )
        if failed is not None:  # no answer, sent or not: the inquiry could not tell
            return CoreResult(Outcome.UNKNOWN, reason=failed.reason)
        if status == 404:
            return CoreResult(Outcome.NOT_FOUND)
        if status != 200:
            return CoreResult(Outcome.UNKNOWN, reason=f"HTTP_{status}")
        try:
            return _result(_answer_decoder.decode(raw))
        except msgspec.DecodeError:
            return CoreResult(Outcome.UNKNOWN, reason="UNREADABLE_ANSWER")

    async def statement(self, day: dt.date) -> list[StatementRow]:
        """The day's transaction file; raises on any failure (reconciliation stops, loudly)."""
        async with self._session.get(
            f"{self._base_url}/core/v1/statements/{day.isoformat()}", timeout=self._timeout
        ) as resp:
            resp.raise_for_status()
            text = await resp.text()
        return [
            StatementRow(
                reference=row["reference"],
                kind=row["kind"],
                status=row["status"],
                amount_fen=parse_amount(row["amount"], allow_zero=True),
                core_txn_id=row.get("core_txn_id") or "",
            )
            for row in csv.DictReader(io.StringIO(text))
        ]

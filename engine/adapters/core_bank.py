"""Core banking: pay to a card, debit a card, status inquiry, the day's statement.

    POST /core/v1/payments        {reference, card, amount, memo}
                                  -> {reference, status, core_txn_id?, reason?}
    POST /core/v1/debits          same shape
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

import csv
import datetime as dt
import enum
import io
from typing import Protocol

import aiohttp
import msgspec

from ledger.money import format_fen, parse_amount


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOT_SENT = "not_sent"
    NOT_FOUND = "not_found"


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


class CoreBank(Protocol):
    async def pay(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult: ...
    async def debit(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult: ...
    async def inquire(self, reference: str) -> CoreResult: ...
    async def statement(self, day: dt.date) -> list[StatementRow]: ...


_answer_decoder = msgspec.json.Decoder(_Answer)


def _result(answer: _Answer) -> CoreResult:
    if answer.status == "succeeded":
        return CoreResult(Outcome.SUCCEEDED, answer.core_txn_id)
    if answer.status == "failed":
        return CoreResult(Outcome.FAILED, answer.core_txn_id, answer.reason or "FAILED")
    return CoreResult(Outcome.UNKNOWN, reason=f"status {answer.status!r}")


class CoreBankClient:
    """The HTTP adapter. `timeout_s` bounds every call, connect included."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        assert timeout_s > 0
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def pay(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult:
        return await self._move("/core/v1/payments", reference, card, amount_fen, memo)

    async def debit(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult:
        return await self._move("/core/v1/debits", reference, card, amount_fen, memo)

    async def _move(
        self, path: str, reference: str, card: str, amount_fen: int, memo: str
    ) -> CoreResult:
        body = {
            "reference": reference,
            "card": card,
            "amount": format_fen(amount_fen),
            "memo": memo,
        }
        try:
            async with self._session.post(
                self._base_url + path, json=body, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            return CoreResult(Outcome.NOT_SENT, reason=type(exc).__name__)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return CoreResult(Outcome.UNKNOWN, reason=type(exc).__name__)
        if status in (400, 422):
            return CoreResult(Outcome.FAILED, reason=f"REFUSED_{status}")
        if status != 200:
            return CoreResult(Outcome.UNKNOWN, reason=f"HTTP_{status}")
        try:
            return _result(_answer_decoder.decode(raw))
        except msgspec.DecodeError:
            return CoreResult(Outcome.UNKNOWN, reason="UNREADABLE_ANSWER")

    async def inquire(self, reference: str) -> CoreResult:
        try:
            async with self._session.get(
                f"{self._base_url}/core/v1/transactions/{reference}", timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            return CoreResult(Outcome.UNKNOWN, reason=type(exc).__name__)
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

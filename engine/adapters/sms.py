"""The SMS gateway.

    POST /sms/v1/send        {reference, phone, text}          -> {message_id, status}
    POST /sms/v1/send-batch  {messages: [≤ 32 of the above]}   -> {results: [{reference,
                                                                   status, message_id?}]}

A message is best effort: sending never blocks or fails a money movement. The
gateway drops a repeated reference, so a resend after a crash is harmless.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

import aiohttp
import msgspec

SEND_BATCH_MAX = 32


class Sms(msgspec.Struct, frozen=True):
    reference: str
    phone: str
    text: str


class SmsGateway(Protocol):
    async def send(self, reference: str, phone: str, text: str) -> bool: ...

    async def send_batch(self, messages: list[Sms]) -> list[bool]: ...


class _Batch(msgspec.Struct, frozen=True):
    messages: list[Sms]


class _Result(msgspec.Struct, frozen=True):
    reference: str
    status: Literal["accepted", "failed"]


class _BatchAnswer(msgspec.Struct, frozen=True):
    results: list[_Result]


_encode = msgspec.json.Encoder().encode
_decode_batch = msgspec.json.Decoder(_BatchAnswer).decode


class SmsClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        assert timeout_s > 0
        self._session = session
        self._url = base_url.rstrip("/") + "/sms/v1/send"
        self._batch_url = base_url.rstrip("/") + "/sms/v1/send-batch"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, reference: str, phone: str, text: str) -> bool:
        """True when the gateway accepted the message."""
        body = {"reference": reference, "phone": phone, "text": text}
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as resp:
                await resp.read()
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def send_batch(self, messages: list[Sms]) -> list[bool]:
        """Whether the gateway accepted each message, in order (all False when the call
        itself failed: each is then resent later under its own reference). A batch the
        gateway refuses as a whole (4xx) is sent message by message."""
        assert 1 <= len(messages) <= SEND_BATCH_MAX, len(messages)
        headers = {"Content-Type": "application/json"}
        try:
            async with self._session.post(
                self._batch_url,
                data=_encode(_Batch(messages)),
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError):
            return [False] * len(messages)
        if 400 <= status < 500:
            # The gateway refused the batch as a whole (one bad message, or no batch
            # endpoint): each message alone, so one cannot hold back the others.
            return list(
                await asyncio.gather(*(self.send(m.reference, m.phone, m.text) for m in messages))
            )
        if status != 200:
            return [False] * len(messages)
        try:
            answer = _decode_batch(payload)
        except msgspec.DecodeError:
            return [False] * len(messages)
        accepted = {r.reference for r in answer.results if r.status == "accepted"}
        return [m.reference in accepted for m in messages]

"""The SMS gateway: `POST /sms/v1/send {reference, phone, text}` -> {message_id, status}.

A message is best effort: sending never blocks or fails a money movement. The
gateway drops a repeated reference, so a resend after a crash is harmless.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp


class SmsGateway(Protocol):
    async def send(self, reference: str, phone: str, text: str) -> bool: ...


class SmsClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        assert timeout_s > 0
        self._session = session
        self._url = base_url.rstrip("/") + "/sms/v1/send"
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

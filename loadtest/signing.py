"""The channel request signature of API.md, version 2, for the load generators.

    X-Signature = hex(HMAC-SHA256(secret, METHOD "\\n" PATH_AND_QUERY "\\n" X-Timestamp
                                          "\\n" X-Nonce "\\n" hex(SHA256(body))
                                          "\\n" X-Channel-Id "\\n" Idempotency-Key))

(the key is "" for GET or when the request has none). Written again from the
contract rather than imported from `engine.security.signing`: the load test is a
channel system, outside the engine, and must sign the way a channel following API.md
would. `tests/test_loadtest_smoke.py` checks both ends agree. Standard library only
and no asyncio: Locust users are gevent greenlets and import this module.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

CHANNEL_ID_HEADER: Final = "X-Channel-Id"
TIMESTAMP_HEADER: Final = "X-Timestamp"
NONCE_HEADER: Final = "X-Nonce"
SIGNATURE_HEADER: Final = "X-Signature"
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"

# 18 random bytes are 24 base64url characters: inside API.md's 16..64 of [A-Za-z0-9_-].
_NONCE_RANDOM_BYTES: Final = 18


def signature(  # noqa: PLR0917 - positional in the order of the string to sign
    secret: str,
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    channel_id: str,
    idempotency_key: str = "",
) -> str:
    """The X-Signature value (64 lower-case hex characters) of one request."""
    fields = (method, path_and_query, timestamp, nonce, channel_id, idempotency_key)
    assert "\n" not in "".join(fields), "no field holds a newline"
    body_hex = hashlib.sha256(body).hexdigest()
    key = "" if method == "GET" else idempotency_key
    message = "\n".join(
        (method, path_and_query, timestamp, nonce, body_hex, channel_id, key)
    ).encode("ascii")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh nonce: 24 characters of [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(_NONCE_RANDOM_BYTES)


def auth_headers(
    channel_id: str,
    secret: str,
    method: str,
    path_and_query: str,
    body: bytes,
    *,
    idempotency_key: str | None = None,
    now_s: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The authentication headers for one request (a fresh nonce unless given), with
    the Idempotency-Key they sign when one is given."""
    timestamp = str(int(time.time()) if now_s is None else now_s)
    nonce = new_nonce() if nonce is None else nonce
    headers = {
        CHANNEL_ID_HEADER: channel_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(
            secret, method, path_and_query, timestamp, nonce, body, channel_id,
            idempotency_key or "",
        ),
    }  # fmt: skip
    if idempotency_key is not None:
        headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
    return headers

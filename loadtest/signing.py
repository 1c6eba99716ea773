"""The channel request signature of API.md, for the load generators.

    X-Signature = hex(HMAC-SHA256(secret, METHOD "\\n" PATH_AND_QUERY "\\n" X-Timestamp
                                          "\\n" X-Nonce "\\n" hex(SHA256(body))))

Written again from the contract rather than imported from `engine.security.signing`:
the load test is a channel system, outside the engine, and must sign the way a
channel following API.md would. `tests/test_loadtest_smoke.py` checks both
ends agree. Standard library only and no asyncio: Locust users are gevent
greenlets and import this module.
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

# 18 random bytes are 24 base64url characters: inside API.md's 16..64 of [A-Za-z0-9_-].
_NONCE_RANDOM_BYTES: Final = 18


def signature(  # noqa: PLR0917 - positional in the order of the string to sign
    secret: str, method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """The X-Signature value (64 lower-case hex characters) of one request."""
    assert "\n" not in method + path_and_query + timestamp + nonce, "no field holds a newline"
    body_hex = hashlib.sha256(body).hexdigest()
    message = f"{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hex}".encode("ascii")
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
    now_s: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four authentication headers for one request (a fresh nonce unless given)."""
    timestamp = str(int(time.time()) if now_s is None else now_s)
    nonce = new_nonce() if nonce is None else nonce
    return {
        CHANNEL_ID_HEADER: channel_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, method, path_and_query, timestamp, nonce, body),
    }

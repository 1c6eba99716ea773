"""The channel request signature (API.md, Authentication), for both ends.

    string to sign = METHOD          "POST"
                     "\\n" PATH_AND_QUERY  "/v1/drawdowns?x=1"  (as on the wire, percent-encoded)
                     "\\n" X-Timestamp     "1700000000"         (unix seconds)
                     "\\n" X-Nonce         16-64 of [A-Za-z0-9_-]
                     "\\n" hex(SHA256(body))                    (lower-case; body may be empty)
    X-Signature    = hex(HMAC-SHA256(secret, string to sign))

No field may hold a newline (checked), so distinct requests never share a
string to sign. This module only computes and compares: the clock-skew window,
the nonce replay store and the channel lookup belong to the auth middleware.

Standard library only, and no asyncio: the gevent load test imports it too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Final

HEADER_CHANNEL_ID: Final = "X-Channel-Id"
HEADER_TIMESTAMP: Final = "X-Timestamp"
HEADER_NONCE: Final = "X-Nonce"
HEADER_SIGNATURE: Final = "X-Signature"

NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Printable ASCII, no space: a request target as sent is already percent-encoded.
_PATH_AND_QUERY_RE: Final = re.compile(r"/[\x21-\x7e]{0,4095}")
_METHOD_RE: Final = re.compile(r"[A-Z]{1,16}")
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_CHANNEL_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,64}")
_NONCE_RANDOM_BYTES: Final = 24  # base64url of 24 bytes: 32 characters


def body_sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def string_to_sign(
    method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    """The signed bytes; ValueError if a field is malformed (it could not be sent)."""
    # fullmatch, not match with $: "$" would also accept a trailing newline.
    if not _METHOD_RE.fullmatch(method):
        raise ValueError("method must be an upper-case HTTP method such as POST")
    if not _PATH_AND_QUERY_RE.fullmatch(path_and_query):
        raise ValueError("path_and_query must start with / and be printable ASCII, no spaces")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise ValueError("timestamp must be unix seconds in decimal digits")
    if not NONCE_RE.fullmatch(nonce):
        raise ValueError("nonce must be 16-64 characters of [A-Za-z0-9_-]")
    text = "\n".join((method, path_and_query, timestamp, nonce, body_sha256_hex(body)))
    return text.encode("ascii")


# Positional in the order of the string to sign, as API.md writes it.
def sign(  # noqa: PLR0917
    secret: str, method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """The X-Signature value: 64 lower-case hex characters."""
    message = string_to_sign(method, path_and_query, timestamp, nonce, body)
    return hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def verify(  # noqa: PLR0917
    secret: str,
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    signature: str,
) -> bool:
    """True only if `signature` is right; malformed input of any kind is False."""
    if not _SIGNATURE_RE.fullmatch(signature):
        return False
    try:
        expected = sign(secret, method, path_and_query, timestamp, nonce, body)
    except ValueError:
        return False
    # Constant time over the digest bytes, so hex case does not matter.
    return hmac.compare_digest(bytes.fromhex(expected), bytes.fromhex(signature))


def make_nonce() -> str:
    nonce = secrets.token_urlsafe(_NONCE_RANDOM_BYTES)
    assert NONCE_RE.fullmatch(nonce)
    return nonce


def signed_headers(
    channel_id: str,
    secret: str,
    method: str,
    path_and_query: str,
    body: bytes,
    *,
    now_s: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four authentication headers for one request (fresh nonce by default)."""
    if not _CHANNEL_ID_RE.fullmatch(channel_id):
        raise ValueError("channel_id must be 1-64 printable ASCII characters")
    timestamp = str(int(time.time()) if now_s is None else now_s)
    nonce = make_nonce() if nonce is None else nonce
    return {
        HEADER_CHANNEL_ID: channel_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, path_and_query, timestamp, nonce, body),
    }


def _secret_bytes(secret: str) -> bytes:
    if not secret:
        raise ValueError("the channel secret is empty")
    return secret.encode("utf-8")

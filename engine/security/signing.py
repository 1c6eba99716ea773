"""The channel request signature (API.md, Authentication), for both ends.

    string to sign = METHOD          "POST"
                     "\\n" PATH_AND_QUERY  "/v1/drawdowns?x=1"  (as on the wire, percent-encoded)
                     "\\n" X-Timestamp     "1700000000"         (unix seconds)
                     "\\n" X-Nonce         16-64 of [A-Za-z0-9_-]
                     "\\n" hex(SHA256(body))                    (lower-case; body may be empty)
      version 2 adds "\\n" X-Channel-Id    "demo"
                     "\\n" Idempotency-Key as sent ("" for GET, or when absent)
    X-Signature    = hex(HMAC-SHA256(secret, string to sign))

Version 2 covers who sends and under which key: a captured request resent under
another Idempotency-Key no longer verifies (issue 21). Version 1 is accepted only
during a channel's changeover window (its `signature_v1_until`), by the auth
middleware's choice; this module only computes and compares.

No field may hold a newline (checked), so distinct requests never share a
string to sign. The clock-skew window, the nonce replay stores and the channel
lookup belong to the auth middleware.

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
HEADER_IDEMPOTENCY_KEY: Final = "Idempotency-Key"
BODILESS_METHODS: Final = frozenset({"GET", "HEAD"})

NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Printable ASCII, no space: a request target as sent is already percent-encoded.
_PATH_AND_QUERY_RE: Final = re.compile(r"/[\x21-\x7e]{0,4095}")
_METHOD_RE: Final = re.compile(r"[A-Z]{1,16}")
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_CHANNEL_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,64}")
# The key as sent, spaces allowed (the idempotency layer answers 400 for a bad one).
_KEY_RE: Final = re.compile(r"[\x20-\x7e]{0,256}")
VERSION_CURRENT: Final = 2
VERSIONS: Final = (1, 2)
_NONCE_RANDOM_BYTES: Final = 24  # base64url of 24 bytes: 32 characters


def body_sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def string_to_sign(
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    *,
    version: int = VERSION_CURRENT,
    channel_id: str = "",
    idempotency_key: str = "",
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
    fields = [method, path_and_query, timestamp, nonce, body_sha256_hex(body)]
    if version == 2:
        if not _CHANNEL_ID_RE.fullmatch(channel_id):
            raise ValueError("channel_id must be 1-64 printable ASCII characters")
        if not _KEY_RE.fullmatch(idempotency_key):
            raise ValueError("idempotency_key must be at most 256 printable ASCII characters")
        fields += [channel_id, idempotency_key]
    elif version != 1:
        raise ValueError(f"signature version {version} is not one of {VERSIONS}")
    return "\n".join(fields).encode("ascii")


# Positional in the order of the string to sign, as API.md writes it.
def sign(  # noqa: PLR0917
    secret: str,
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    *,
    version: int = VERSION_CURRENT,
    channel_id: str = "",
    idempotency_key: str = "",
) -> str:
    """The X-Signature value: 64 lower-case hex characters."""
    message = string_to_sign(
        method,
        path_and_query,
        timestamp,
        nonce,
        body,
        version=version,
        channel_id=channel_id,
        idempotency_key=idempotency_key,
    )
    return hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def verify(  # noqa: PLR0917
    secret: str,
    method: str,
    path_and_query: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    signature: str,
    *,
    version: int = VERSION_CURRENT,
    channel_id: str = "",
    idempotency_key: str = "",
) -> bool:
    """True only if `signature` is right for this version; malformed input of any kind
    is False."""
    if not _SIGNATURE_RE.fullmatch(signature):
        return False
    try:
        expected = sign(
            secret,
            method,
            path_and_query,
            timestamp,
            nonce,
            body,
            version=version,
            channel_id=channel_id,
            idempotency_key=idempotency_key,
        )
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
    idempotency_key: str | None = None,
    version: int = VERSION_CURRENT,
    now_s: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The authentication headers for one request (fresh nonce by default), with the
    Idempotency-Key when one is given: version 2 signs it."""
    if not _CHANNEL_ID_RE.fullmatch(channel_id):
        raise ValueError("channel_id must be 1-64 printable ASCII characters")
    timestamp = str(int(time.time()) if now_s is None else now_s)
    nonce = make_nonce() if nonce is None else nonce
    signed_key = key_to_sign(method, idempotency_key)
    headers = {
        HEADER_CHANNEL_ID: channel_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(
            secret,
            method,
            path_and_query,
            timestamp,
            nonce,
            body,
            version=version,
            channel_id=channel_id,
            idempotency_key=signed_key,
        ),
    }
    if idempotency_key is not None:
        headers[HEADER_IDEMPOTENCY_KEY] = idempotency_key
    return headers


def key_to_sign(method: str, idempotency_key: str | None) -> str:
    """What version 2 signs for the Idempotency-Key: "" for GET, or when absent."""
    return "" if method in BODILESS_METHODS or idempotency_key is None else idempotency_key


def _secret_bytes(secret: str) -> bytes:
    if not secret:
        raise ValueError("the channel secret is empty")
    return secret.encode("utf-8")

"""The channel request signature: fixed vectors, and every field is covered.

The vectors below were computed once and cross-checked with
`printf '<string to sign>' | openssl dgst -sha256 -hmac demo-secret`; a change
to the algorithm (field order, separator, hex case, body hash) breaks them.
Version 1 (method, path, timestamp, nonce, body) and version 2 (those, then the
channel id and the Idempotency-Key, issue 21) each have their own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.security import signing

SECRET = "demo-secret"
TIMESTAMP = "1700000000"
NONCE = "abcdefghijklmnop0123"
POST_PATH = "/v1/drawdowns?dry_run=1"
POST_BODY = b'{"credit_line_id":"42","amount":"5000.00"}'
POST_BODY_SHA256 = "127f5747ce864ea308c6a72da5f7859179eb1aa9e5b169c76302a4dd7b69092b"
POST_STRING_TO_SIGN = (
    b"POST\n/v1/drawdowns?dry_run=1\n1700000000\nabcdefghijklmnop0123\n" + POST_BODY_SHA256.encode()
)
POST_SIGNATURE = "520efd06e0bcba6a9190f4e8762eee316044160616142179ef8d56124e74aec5"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
GET_SIGNATURE = "8e90cbcff7d4d22435eeb62ddc557be7b008ca188eb15df8910395aff70c3062"

POST_ARGS: dict[str, Any] = {
    "secret": SECRET,
    "method": "POST",
    "path_and_query": POST_PATH,
    "timestamp": TIMESTAMP,
    "nonce": NONCE,
    "body": POST_BODY,
    "version": 1,
}
IDEM_KEY = "dd-2026-0001"
V2_POST_SIGNATURE = "a57ce668aeb6e995e9d580e9b9bf215e146ec9a61d586a0db0e2a7145c5a9383"
V2_GET_SIGNATURE = "2541bfa6cb7b3ac7d13ec4484bb4c1c37490d56f2714ce8cc7e1cf3e57ad2ec1"
V2_POST_ARGS: dict[str, Any] = POST_ARGS | {
    "version": 2,
    "channel_id": "demo",
    "idempotency_key": IDEM_KEY,
}


def test_body_hash_vectors() -> None:
    assert signing.body_sha256_hex(POST_BODY) == POST_BODY_SHA256
    assert signing.body_sha256_hex(b"") == EMPTY_SHA256


def test_string_to_sign_vector() -> None:
    assert (
        signing.string_to_sign("POST", POST_PATH, TIMESTAMP, NONCE, POST_BODY, version=1)
        == POST_STRING_TO_SIGN
    )


def test_signature_vectors() -> None:
    assert signing.sign(**POST_ARGS) == POST_SIGNATURE
    get = {"method": "GET", "path_and_query": "/v1/loans/123", "body": b"", "version": 1}
    assert signing.sign(**(POST_ARGS | get)) == GET_SIGNATURE


def test_verify_accepts_the_vector_in_either_hex_case() -> None:
    assert signing.verify(**POST_ARGS, signature=POST_SIGNATURE)
    assert signing.verify(**POST_ARGS, signature=POST_SIGNATURE.upper())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("secret", "demo-secreT"),
        ("method", "PUT"),
        ("path_and_query", "/v1/drawdowns?dry_run=2"),
        ("path_and_query", "/v1/drawdowns"),
        ("timestamp", "1700000001"),
        ("nonce", "abcdefghijklmnop0124"),
        ("body", POST_BODY + b" "),
        ("body", b""),
    ],
)
def test_verify_rejects_any_changed_field(field: str, value: object) -> None:
    changed = {**POST_ARGS, field: value}
    assert not signing.verify(**changed, signature=POST_SIGNATURE)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        POST_SIGNATURE[:-1],
        POST_SIGNATURE + "0",
        "zz" + POST_SIGNATURE[2:],
        "0x" + POST_SIGNATURE[2:],
        POST_SIGNATURE + "\n",
        " " + POST_SIGNATURE[1:],
        "é" * 64,
        "０" * 64,  # full-width digits are not hex
    ],
)
def test_malformed_signature_is_false_not_an_exception(signature: str) -> None:
    assert not signing.verify(**POST_ARGS, signature=signature)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "post"),
        ("method", ""),
        ("path_and_query", "v1/drawdowns"),
        ("path_and_query", "/v1/drawdowns\nPOST"),
        ("path_and_query", "/v1/draw downs"),
        ("path_and_query", "/v1/贷款"),
        ("timestamp", "17e8"),
        ("timestamp", ""),
        ("timestamp", "1700000000\n"),
        ("nonce", "short"),
        ("nonce", "abcdefghijklmnop012!"),
        ("nonce", NONCE + "\n"),
        ("secret", ""),
    ],
)
def test_malformed_fields(field: str, value: str) -> None:
    changed = {**POST_ARGS, field: value}
    assert not signing.verify(**changed, signature=POST_SIGNATURE)
    with pytest.raises(ValueError):
        signing.sign(**changed)


@pytest.mark.parametrize(
    ("nonce", "ok"),
    [
        ("a" * 15, False),
        ("a" * 16, True),
        ("A-z_09" * 10 + "abcd", True),  # 64
        ("a" * 65, False),
        ("a" * 15 + "=", False),
        ("a" * 15 + "/", False),
    ],
)
def test_nonce_pattern(nonce: str, ok: bool) -> None:
    assert (signing.NONCE_RE.fullmatch(nonce) is not None) is ok


def test_make_nonce_is_valid_and_fresh() -> None:
    nonces = {signing.make_nonce() for _ in range(200)}
    assert len(nonces) == 200
    assert all(signing.NONCE_RE.fullmatch(n) for n in nonces)


def test_signed_headers_reproduce_the_vector() -> None:
    headers = signing.signed_headers(
        "demo", SECRET, "POST", POST_PATH, POST_BODY, now_s=1_700_000_000, nonce=NONCE, version=1
    )
    assert headers == {
        "X-Channel-Id": "demo",
        "X-Timestamp": TIMESTAMP,
        "X-Nonce": NONCE,
        "X-Signature": POST_SIGNATURE,
    }
    v2 = signing.signed_headers(
        "demo", SECRET, "POST", POST_PATH, POST_BODY, now_s=1_700_000_000, nonce=NONCE,
        idempotency_key=IDEM_KEY,
    )  # fmt: skip
    assert v2["X-Signature"] == V2_POST_SIGNATURE
    assert v2["Idempotency-Key"] == IDEM_KEY


def test_signed_headers_defaults_verify() -> None:
    before_s = int(time.time())
    headers = signing.signed_headers("demo", SECRET, "GET", "/v1/loans/1", b"")
    assert before_s <= int(headers["X-Timestamp"]) <= int(time.time())
    assert signing.NONCE_RE.fullmatch(headers["X-Nonce"])
    assert signing.verify(
        SECRET,
        "GET",
        "/v1/loans/1",
        headers["X-Timestamp"],
        headers["X-Nonce"],
        b"",
        headers["X-Signature"],
        channel_id="demo",
    )


@pytest.mark.parametrize("channel_id", ["", "de mo", "x" * 65, "demo\n"])
def test_signed_headers_refuse_bad_channel_id(channel_id: str) -> None:
    with pytest.raises(ValueError):
        signing.signed_headers(channel_id, SECRET, "GET", "/v1/loans/1", b"")


def test_no_asyncio_import() -> None:
    # The gevent load test imports this module; asyncio (or aiohttp) must not come along.
    code = (
        "import sys, engine.security.signing; "
        "loaded = [m for m in ('asyncio', 'aiohttp') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=root)


def test_version_2_vectors() -> None:
    """Version 2 adds "\\n" X-Channel-Id "\\n" Idempotency-Key (API.md); the default."""
    assert signing.string_to_sign(
        "POST", POST_PATH, TIMESTAMP, NONCE, POST_BODY, channel_id="demo",
        idempotency_key=IDEM_KEY,
    ) == POST_STRING_TO_SIGN + b"\ndemo\n" + IDEM_KEY.encode()  # fmt: skip
    assert signing.sign(**V2_POST_ARGS) == V2_POST_SIGNATURE
    get = {"method": "GET", "path_and_query": "/v1/loans/123", "body": b"", "idempotency_key": ""}
    assert signing.sign(**(V2_POST_ARGS | get)) == V2_GET_SIGNATURE
    assert signing.verify(**V2_POST_ARGS, signature=V2_POST_SIGNATURE)
    assert signing.key_to_sign("GET", "anything") == ""
    assert signing.key_to_sign("POST", None) == ""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idempotency_key", "dd-2026-0002"),  # the replay under a new key
        ("idempotency_key", ""),
        ("channel_id", "demo2"),
        ("version", 1),  # a version 2 signature is not a version 1 one
        ("body", b""),
    ],
)
def test_version_2_covers_the_key_and_the_channel(field: str, value: object) -> None:
    changed = {**V2_POST_ARGS, field: value}
    assert not signing.verify(**changed, signature=V2_POST_SIGNATURE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("channel_id", ""), ("idempotency_key", "a\nb"), ("idempotency_key", "k" * 257),
     ("version", 3)],
)  # fmt: skip
def test_version_2_malformed_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        signing.sign(**{**V2_POST_ARGS, field: value})

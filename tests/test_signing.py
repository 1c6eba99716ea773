"""The channel request signature: fixed vectors, and every field is covered.

The vectors below were computed once and cross-checked with
`printf '<string to sign>' | openssl dgst -sha256 -hmac demo-secret`; a change
to the algorithm (field order, separator, hex case, body hash) breaks them.
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
}


def test_body_hash_vectors() -> None:
    assert signing.body_sha256_hex(POST_BODY) == POST_BODY_SHA256
    assert signing.body_sha256_hex(b"") == EMPTY_SHA256


def test_string_to_sign_vector() -> None:
    assert (
        signing.string_to_sign("POST", POST_PATH, TIMESTAMP, NONCE, POST_BODY)
        == POST_STRING_TO_SIGN
    )


def test_signature_vectors() -> None:
    assert signing.sign(SECRET, "POST", POST_PATH, TIMESTAMP, NONCE, POST_BODY) == POST_SIGNATURE
    assert signing.sign(SECRET, "GET", "/v1/loans/123", TIMESTAMP, NONCE, b"") == GET_SIGNATURE


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
        "demo", SECRET, "POST", POST_PATH, POST_BODY, now_s=1_700_000_000, nonce=NONCE
    )
    assert headers == {
        "X-Channel-Id": "demo",
        "X-Timestamp": TIMESTAMP,
        "X-Nonce": NONCE,
        "X-Signature": POST_SIGNATURE,
    }


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

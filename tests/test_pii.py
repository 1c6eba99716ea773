"""Personal data at rest: AES-256-GCM blobs bound to their column and their row, key
rotation, the keyed lookup index, and the load test's sealing of the same format."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.security.pii import (
    DEV_CURRENT_VERSION,
    DEV_INDEX_KEY,
    DEV_INDEX_KEY_B64,
    DEV_KEYS,
    DEV_KEYS_B64,
    PLAINTEXT_BYTES_MAX,
    PiiCipher,
    PiiError,
    dev_cipher,
    generate_key_b64,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(32, 64))
INDEX_KEY = bytes(range(64, 96))
ID_NUMBER = "11010519491231002X"
ROW = 386810671540932616  # a customer id

cipher = dev_cipher()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("plaintext", ["", ID_NUMBER, "13812345678", "张三 · 农户", "x" * 4096])
def test_round_trip(plaintext: str) -> None:
    blob = cipher.encrypt(plaintext, context="id_number", row=ROW)
    assert cipher.decrypt(blob, context="id_number", row=ROW) == plaintext


@given(st.text(max_size=200), st.sampled_from(["id_number", "phone", "bank_card", "name"]))
def test_round_trip_any_text(plaintext: str, context: str) -> None:
    assert (
        cipher.decrypt(
            cipher.encrypt(plaintext, context=context, row=ROW), context=context, row=ROW
        )
        == plaintext
    )


def test_blob_layout() -> None:
    blob = cipher.encrypt(ID_NUMBER, context="id_number", row=ROW)
    assert blob[0] == DEV_CURRENT_VERSION
    assert len(blob) == 1 + 12 + len(ID_NUMBER) + 16


def test_context_mismatch_fails() -> None:
    blob = cipher.encrypt("13812345678", context="phone", row=ROW)
    for other in ("id_number", "bank_card", "channel_secret", "phon"):
        with pytest.raises(PiiError):
            cipher.decrypt(blob, context=other, row=ROW)


def test_any_flipped_bit_fails() -> None:
    blob = cipher.encrypt(ID_NUMBER, context="id_number", row=ROW)
    for position in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= bit
            with pytest.raises(PiiError):
                cipher.decrypt(bytes(tampered), context="id_number", row=ROW)


@pytest.mark.parametrize("cut", [0, 1, 13, 28, 29, 33])
def test_truncated_or_extended_blob_fails(cut: int) -> None:
    blob = cipher.encrypt(ID_NUMBER, context="id_number", row=ROW)
    with pytest.raises(PiiError):
        cipher.decrypt(blob[:cut], context="id_number", row=ROW)
    with pytest.raises(PiiError):
        cipher.decrypt(blob + b"\x00", context="id_number", row=ROW)


def test_key_rotation() -> None:
    old = PiiCipher({1: KEY_1}, 1, INDEX_KEY)
    rotated = PiiCipher({1: KEY_1, 2: KEY_2}, 2, INDEX_KEY)
    old_blob = old.encrypt(ID_NUMBER, context="id_number", row=ROW)
    new_blob = rotated.encrypt(ID_NUMBER, context="id_number", row=ROW)
    assert old_blob[0] == 1
    assert new_blob[0] == 2
    assert rotated.decrypt(old_blob, context="id_number", row=ROW) == ID_NUMBER
    assert rotated.decrypt(new_blob, context="id_number", row=ROW) == ID_NUMBER
    # A node that has not heard of version 2 refuses clearly, it does not guess.
    with pytest.raises(PiiError, match="unknown key version 2"):
        old.decrypt(new_blob, context="id_number", row=ROW)
    # Once version 1 is retired, its leftovers are refused.
    retired = PiiCipher({2: KEY_2}, 2, INDEX_KEY)
    with pytest.raises(PiiError, match="unknown key version 1"):
        retired.decrypt(old_blob, context="id_number", row=ROW)
    # The index does not depend on the encryption keys: rotation keeps lookups.
    assert old.index(ID_NUMBER, context="id_number") == retired.index(
        ID_NUMBER, context="id_number"
    )


def test_version_byte_swapped_to_another_known_key_fails() -> None:
    rotated = PiiCipher({1: KEY_1, 2: KEY_2}, 2, INDEX_KEY)
    blob = rotated.encrypt(ID_NUMBER, context="id_number", row=ROW)
    with pytest.raises(PiiError):
        rotated.decrypt(b"\x01" + blob[1:], context="id_number", row=ROW)


def test_index_is_deterministic_keyed_and_per_context() -> None:
    first = cipher.index(ID_NUMBER, context="id_number")
    assert len(first) == 32
    assert cipher.index(ID_NUMBER, context="id_number") == first
    assert cipher.index(ID_NUMBER, context="phone") != first
    assert cipher.index("11010519491231002x", context="id_number") != first
    other_key = PiiCipher({1: KEY_1}, 1, INDEX_KEY)
    assert other_key.index(ID_NUMBER, context="id_number") != first
    # Written out independently: HMAC-SHA256(index_key, context NUL plaintext).
    expected = hmac.new(DEV_INDEX_KEY, b"id_number\x00" + ID_NUMBER.encode(), hashlib.sha256)
    assert first == expected.digest()


def test_ciphertext_never_contains_the_plaintext() -> None:
    for plaintext in (ID_NUMBER, "13812345678", "6222021234567890128", "张三"):
        blobs = {cipher.encrypt(plaintext, context="id_number", row=ROW) for _ in range(20)}
        assert len(blobs) == 20  # a fresh nonce each time: equal values do not look equal
        for blob in blobs:
            assert plaintext.encode() not in blob
            assert plaintext[:6].encode() not in blob


def test_bad_context_is_a_programming_error() -> None:
    for context in ("", "Phone", "id number", "id_number\x00", "x" * 65):
        with pytest.raises(ValueError):
            cipher.encrypt("1", context=context, row=ROW)
        with pytest.raises(ValueError):
            cipher.index("1", context=context)


def test_plaintext_has_a_limit() -> None:
    with pytest.raises(ValueError):
        cipher.encrypt("x" * (PLAINTEXT_BYTES_MAX + 1), context="id_number", row=ROW)


def test_from_config_matches_the_constructor() -> None:
    from_config = PiiCipher.from_config(DEV_KEYS_B64, DEV_CURRENT_VERSION, DEV_INDEX_KEY_B64)
    blob = cipher.encrypt(ID_NUMBER, context="id_number", row=ROW)
    assert from_config.decrypt(blob, context="id_number", row=ROW) == ID_NUMBER
    assert from_config.index(ID_NUMBER, context="id_number") == cipher.index(
        ID_NUMBER, context="id_number"
    )
    assert from_config.versions == frozenset(DEV_KEYS)
    assert from_config.current_version == DEV_CURRENT_VERSION


@pytest.mark.parametrize(
    ("keys_b64", "current", "index_b64", "message"),
    [
        ({"1": b64(KEY_1[:16])}, 1, b64(INDEX_KEY), "version 1 is 16 bytes"),
        ({"1": b64(KEY_1 + b"x")}, 1, b64(INDEX_KEY), "version 1 is 33 bytes"),
        ({"1": "not base64!"}, 1, b64(INDEX_KEY), "version 1 is not valid base64"),
        ({"1": "密钥"}, 1, b64(INDEX_KEY), "version 1 is not valid base64"),
        ({"1": b64(KEY_1)}, 2, b64(INDEX_KEY), "current key version 2 has no key"),
        ({}, 1, b64(INDEX_KEY), "no PII encryption keys"),
        ({"v1": b64(KEY_1)}, 1, b64(INDEX_KEY), "'v1' is not an integer"),
        ({"256": b64(KEY_1)}, 256, b64(INDEX_KEY), "outside 0..255"),
        ({"1": b64(KEY_1), "01": b64(KEY_2)}, 1, b64(INDEX_KEY), "configured twice"),
        ({"1": b64(KEY_1)}, 1, b64(INDEX_KEY[:31]), "index key is 31 bytes"),
        ({"1": b64(KEY_1)}, 1, b64(KEY_1), "index key must differ"),
    ],
)
def test_from_config_refusals(
    keys_b64: dict[str, str], current: int, index_b64: str, message: str
) -> None:
    with pytest.raises(PiiError, match=message):
        PiiCipher.from_config(keys_b64, current, index_b64)


def test_from_config_tolerates_surrounding_whitespace() -> None:
    PiiCipher.from_config({"1": f" {b64(KEY_1)}\n"}, 1, b64(INDEX_KEY) + "\n")


def test_dev_keys_say_what_they_are() -> None:
    for key in (*DEV_KEYS.values(), DEV_INDEX_KEY):
        assert key.startswith(b"dev-only-")
        assert len(key) == 32
    # Pinned: the local stack's stored data (and engine.settings' dev fallback)
    # depend on exactly these; changing them makes that data unreadable.
    assert dict(DEV_KEYS_B64) == {"1": "ZGV2LW9ubHktcGlpLWtleS12MS0wMTIzNDU2Nzg5YWI="}
    assert DEV_INDEX_KEY_B64 == "ZGV2LW9ubHktaW5kZXgta2V5LTAxMjM0NTY3ODlhYmM="


def test_generate_key_b64() -> None:
    keys = {generate_key_b64() for _ in range(10)}
    assert len(keys) == 10
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 32
    PiiCipher.from_config({"7": keys.pop()}, 7, keys.pop())


def test_a_blob_opens_only_in_its_own_row() -> None:
    """Issue 21, item 8: copied into another customer's row, it does not decrypt."""
    blob = cipher.encrypt(ID_NUMBER, context="id_number", row=ROW)
    with pytest.raises(PiiError, match="row"):
        cipher.decrypt(blob, context="id_number", row=ROW + 1)
    assert cipher.decrypt(blob, context="id_number", row=ROW) == ID_NUMBER
    # a channel secret is bound to its channel id the same way
    secret = cipher.encrypt("s3cret", context="channel_secret", row="bank-app")
    with pytest.raises(PiiError):
        cipher.decrypt(secret, context="channel_secret", row="other-app")


def test_an_unbound_blob_opens_only_through_the_migration_path() -> None:
    """A blob of the old form (the column alone as AAD) is not read as anyone's; the
    re-sealing step opens it with `open_unbound` and seals it bound."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = bytes(12)
    old = bytes([1]) + nonce + AESGCM(DEV_KEYS[1]).encrypt(nonce, b"13812345678", b"phone")
    with pytest.raises(PiiError):
        cipher.decrypt(old, context="phone", row=ROW)
    assert cipher.open_unbound(old, context="phone") == "13812345678"


@pytest.mark.parametrize("row", [-1, "", "a\x00b", "x" * 65, "渠道"])
def test_bad_row_ids_are_a_programming_error(row: int | str) -> None:
    with pytest.raises(ValueError):
        cipher.encrypt("1", context="phone", row=row)


def test_the_seeder_seals_what_the_engine_opens() -> None:
    """loadtest/seed.py seals without importing the engine: the same format, the same
    row binding, the same lookup index."""
    import datetime as dt
    from decimal import Decimal

    from loadtest.seed import RowMaker

    maker = RowMaker(dt.date(2026, 1, 1), Decimal("1.5"), 1)
    blob = maker.seal("6222021234567890128", "bank_card", ROW)
    assert cipher.decrypt(blob, context="bank_card", row=ROW) == "6222021234567890128"
    with pytest.raises(PiiError):
        cipher.decrypt(blob, context="bank_card", row=ROW + 1)
    card_index = maker.lookup_index("6222021234567890128", "bank_card")
    assert card_index == cipher.index("6222021234567890128", context="bank_card")
    assert maker.id_number_index(ID_NUMBER) == cipher.index(ID_NUMBER, context="id_number")

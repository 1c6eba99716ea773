"""Personal data at rest: AES-256-GCM per column, plus a keyed lookup hash.

    stored blob  = version (1 byte) || nonce (12 random bytes) || ciphertext || tag (16 bytes)
    AAD          = context "\\x00" row, e.g. b"id_number\\x00386810671540932616"
    lookup index = HMAC-SHA256(index_key, context + "\\x00" + plaintext)   (32 bytes)

- **Column and row as AAD**: a blob sealed for "phone" fails to open as
  "id_number", and a blob sealed for customer 1 fails to open in customer 2's
  row: a ciphertext copied into another column or another row (by a bug, or by
  someone who can write the table but holds no key) is refused instead of read
  back as someone else's (issue 21). The row is the id of the row that holds the
  blob (customer, loan, repayment, application; a channel's id). Blobs sealed
  before, with the column alone, are re-sealed once by `python -m engine migrate`
  (`engine.stores.pii_rebind`, through `open_unbound`); nothing else opens them.
- **Key rotation**: every blob names the key version that sealed it. New
  blobs use `current_version`; older versions stay in `keys` until a
  re-encryption pass has rewritten their rows, then are removed.
- **Lookup index**: the database cannot search ciphertext (random nonces make
  it non-deterministic on purpose), so a unique index such as "same ID number
  in the same tenant" is built on the HMAC. It is keyed, so a leaked table
  cannot be reversed by hashing every possible ID number (only ~10^10 exist).
  The index key is never rotated casually: changing it means recomputing every
  index column.

Only the `DEV_*` keys live in source, and they say so in their own bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
VERSION_MAX: Final = 255  # the version is one byte
# Personal fields are short; the cap keeps a bad caller from sealing megabytes.
PLAINTEXT_BYTES_MAX: Final = 4096
BLOB_BYTES_MIN: Final = 1 + NONCE_BYTES + TAG_BYTES
BLOB_BYTES_MAX: Final = BLOB_BYTES_MIN + PLAINTEXT_BYTES_MAX

# Contexts are column names; no NUL, so `context + "\x00" + plaintext` is unambiguous.
_CONTEXT_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Row ids: 64-bit ids as digits, or a channel id; never a NUL.
_ROW_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
Row = int | str

# DEV / TEST ONLY. These keys are public (they are in git) and protect nothing.
# Each reads as ASCII starting "dev-only", so a dump showing one is obviously
# not a real key. They are the bytes of `engine.settings`' dev fallback, so
# data sealed by the local stack opens with either.
DEV_KEYS: Final[Mapping[int, bytes]] = MappingProxyType({1: b"dev-only-pii-key-v1-0123456789ab"})
DEV_INDEX_KEY: Final = b"dev-only-index-key-0123456789abc"
DEV_CURRENT_VERSION: Final = 1
# The same keys in the form `PiiCipher.from_config` and the configuration take.
DEV_KEYS_B64: Final[Mapping[str, str]] = MappingProxyType(
    {str(v): base64.b64encode(k).decode("ascii") for v, k in DEV_KEYS.items()}
)
DEV_INDEX_KEY_B64: Final = base64.b64encode(DEV_INDEX_KEY).decode("ascii")


class PiiError(ValueError):
    """A blob cannot be opened (unknown key version, tampered, wrong context)
    or the key configuration is unusable. The message never holds plaintext."""


class PiiCipher:
    """Seals and opens personal fields; made once at start-up and shared."""

    def __init__(self, keys: Mapping[int, bytes], current_version: int, index_key: bytes) -> None:
        if not keys:
            raise PiiError("no PII encryption keys configured")
        for version, key in keys.items():
            _check_version(version)
            _check_key_length(f"PII key version {version}", key)
        if current_version not in keys:
            raise PiiError(f"PII current key version {current_version} has no key")
        _check_key_length("PII index key", index_key)
        if any(hmac.compare_digest(index_key, key) for key in keys.values()):
            # One key, one purpose: an index key that also encrypts weakens both.
            raise PiiError("PII index key must differ from every encryption key")
        self._aead_by_version = {version: AESGCM(key) for version, key in keys.items()}
        self._current_version = current_version
        self._index_key = index_key

    @classmethod
    def from_config(
        cls, keys_b64: Mapping[str, str], current_version: int, index_key_b64: str
    ) -> PiiCipher:
        """Builds from configuration: `{"1": "<base64 of 32 bytes>", ...}`."""
        keys: dict[int, bytes] = {}
        for version_text, key_b64 in keys_b64.items():
            version = _parse_version(version_text)
            if version in keys:
                raise PiiError(f"PII key version {version} is configured twice")
            keys[version] = _decode_key(f"PII key version {version}", key_b64)
        return cls(keys, current_version, _decode_key("PII index key", index_key_b64))

    @property
    def current_version(self) -> int:
        return self._current_version

    @property
    def versions(self) -> frozenset[int]:
        return frozenset(self._aead_by_version)

    def encrypt(self, plaintext: str, *, context: str, row: Row) -> bytes:
        """Seal `plaintext` for column `context` of the row whose id is `row`."""
        data = plaintext.encode("utf-8")
        if len(data) > PLAINTEXT_BYTES_MAX:
            raise ValueError(f"PII plaintext is {len(data)} bytes; at most {PLAINTEXT_BYTES_MAX}")
        aad = _aad(context, row)
        # 96-bit random nonces: safe for far more than 2^32 blobs per key at our volumes.
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead_by_version[self._current_version].encrypt(nonce, data, aad)
        blob = bytes([self._current_version]) + nonce + sealed
        assert len(blob) == BLOB_BYTES_MIN + len(data)
        return blob

    def decrypt(self, blob: bytes, *, context: str, row: Row) -> str:
        """Open a blob sealed for this column of this row; PiiError otherwise."""
        return self._open(blob, context, _aad(context, row))

    def open_unbound(self, blob: bytes, *, context: str) -> str:
        """Open a blob sealed before issue 21, bound to its column only. For the
        re-sealing step of `migrate` alone: reading such blobs anywhere else would give
        back the protection the row binding adds."""
        return self._open(blob, context, _context_bytes(context))

    def _open(self, blob: bytes, context: str, aad: bytes) -> str:
        if not BLOB_BYTES_MIN <= len(blob) <= BLOB_BYTES_MAX:
            raise PiiError(f"PII blob of {len(blob)} bytes is not a sealed value")
        version = blob[0]
        aead = self._aead_by_version.get(version)
        if aead is None:
            raise PiiError(f"PII blob sealed with unknown key version {version}")
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            data = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise PiiError(
                f"PII blob failed authentication as {context!r} of this row "
                "(tampered, or another column's or row's)"
            ) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise PiiError("PII blob holds bytes that are not UTF-8") from None

    def index(self, plaintext: str, *, context: str) -> bytes:
        """The keyed lookup hash of `plaintext`: equal inputs, equal outputs."""
        message = _context_bytes(context) + b"\x00" + plaintext.encode("utf-8")
        return hmac.new(self._index_key, message, hashlib.sha256).digest()


def dev_cipher() -> PiiCipher:
    """A cipher on the public DEV keys: for tests and the local stack only."""
    return PiiCipher(DEV_KEYS, DEV_CURRENT_VERSION, DEV_INDEX_KEY)


def generate_key_b64() -> str:
    """A fresh random 32-byte key, base64, for an operator to put in the vault."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _context_bytes(context: str) -> bytes:
    if not _CONTEXT_RE.fullmatch(context):
        raise ValueError(f"PII context {context!r} must match {_CONTEXT_RE.pattern}")
    return context.encode("ascii")


def _aad(context: str, row: Row) -> bytes:
    if isinstance(row, int):
        if row < 0:
            raise ValueError(f"PII row id {row} is negative")
        text = str(row)
    else:
        text = row
    if not _ROW_RE.fullmatch(text):
        raise ValueError(f"PII row id {text!r} must match {_ROW_RE.pattern}")
    return _context_bytes(context) + b"\x00" + text.encode("ascii")


def _check_version(version: int) -> None:
    if not 0 <= version <= VERSION_MAX:
        raise PiiError(f"PII key version {version} is outside 0..{VERSION_MAX}")


def _check_key_length(name: str, key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise PiiError(f"{name} is {len(key)} bytes; it must be exactly {KEY_BYTES}")


def _parse_version(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,3}", text):
        raise PiiError(f"PII key version {text!r} is not an integer 0..{VERSION_MAX}")
    version = int(text)
    _check_version(version)
    return version


def _decode_key(name: str, key_b64: str) -> bytes:
    try:
        return base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PiiError(f"{name} is not valid base64") from None

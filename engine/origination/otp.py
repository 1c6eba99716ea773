"""The contract's one-time signing code (短信验证码): issued by SMS, kept only as a keyed hash.

    issue  locked (too many wrong codes) ....................... 429 OTP_LOCKED
           the last code less than resend_s ago ................ 429 OTP_RESEND_TOO_SOON
           else 6 random digits; stored: HMAC(index key, contract:salt:code), the salt,
           the expiry; the caller sends the SMS after the commit (`void` if it did not go)
    check  locked ...................................................... OTP_LOCKED
           no live code ................................................ OTP_NOT_ISSUED
           past its expiry ............................................. OTP_EXPIRED
           wrong: wrong_attempts + 1 ......... OTP_INVALID, or at attempts_max the code is
                                                dropped and the contract locked for lock_s
           right: the code is spent, wrong_attempts back to 0

Wrong codes count per contract, not per code: a new code does not buy new guesses, so
at most `attempts_max` guesses per `lock_s` reach a contract. The code itself is never
stored, logged or answered; only the customer's phone receives it.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
import math
import secrets
from typing import Final

import asyncpg
import msgspec

from engine.contract.errors import ApiError, TooManyRequests, Unprocessable
from engine.security.pii import PiiCipher

CODE_DIGITS: Final = 6
SALT_BYTES: Final = 16
OTP_CONTEXT: Final = "contract_otp"


class OtpPolicy(msgspec.Struct, frozen=True):
    ttl_s: int
    attempts_max: int
    lock_s: int
    resend_s: int

    def __post_init__(self) -> None:
        assert self.ttl_s > 0 and self.attempts_max > 0 and self.lock_s > 0
        assert self.resend_s >= 0


class Issued(msgspec.Struct, frozen=True):
    """A code just stored: `code` goes to the customer's phone and nowhere else."""

    code: str
    issue_no: int
    expires_at: dt.datetime
    attempts_left: int

    def __repr__(self) -> str:  # never the code, should this object reach a log
        return f"Issued(issue_no={self.issue_no}, expires_at={self.expires_at})"


class Verdict(enum.Enum):
    OK = "ok"
    NOT_ISSUED = "not_issued"
    EXPIRED = "expired"
    WRONG = "wrong"
    LOCKED = "locked"


class Checked(msgspec.Struct, frozen=True):
    verdict: Verdict
    attempts_left: int = 0
    retry_after_s: int = 0
    issued_at: dt.datetime | None = None  # of the code that was right


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(cipher: PiiCipher, contract_id: int, salt: bytes, code: str) -> bytes:
    """Keyed (the PII index key), so a stolen table cannot be searched through 10^6 codes."""
    return cipher.index(f"{contract_id}:{salt.hex()}:{code}", context=OTP_CONTEXT)


def _seconds_until(moment: dt.datetime, now: dt.datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


async def _row(conn: asyncpg.Connection, contract_id: int) -> tuple[asyncpg.Record, dt.datetime]:
    """The contract's code row (made on first use), locked, and the database's time."""
    await conn.execute(
        "INSERT INTO contract_otp (contract_id) VALUES ($1) ON CONFLICT DO NOTHING", contract_id
    )
    row = await conn.fetchrow(
        "SELECT *, now() AS now FROM contract_otp WHERE contract_id = $1 FOR UPDATE", contract_id
    )
    assert row is not None
    return row, row["now"]


async def issue(
    conn: asyncpg.Connection,
    cipher: PiiCipher,
    policy: OtpPolicy,
    contract_id: int,
    phone_masked: str,
) -> Issued:
    """Store a new code for the contract (raises OTP_LOCKED, OTP_RESEND_TOO_SOON)."""
    row, now = await _row(conn, contract_id)
    if row["locked_until"] is not None and row["locked_until"] > now:
        raise _locked(row["locked_until"], now)
    resend_at = None if row["issued_at"] is None else row["issued_at"] + _s(policy.resend_s)
    if resend_at is not None and resend_at > now:
        wait_s = _seconds_until(resend_at, now)
        raise TooManyRequests(
            "OTP_RESEND_TOO_SOON",
            f"a code was sent less than {policy.resend_s} s ago; ask again in {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    code, salt = new_code(), secrets.token_bytes(SALT_BYTES)
    expires_at = now + _s(policy.ttl_s)
    issue_no = await conn.fetchval(
        """UPDATE contract_otp SET code_hash = $2, salt = $3, issued_at = $4, expires_at = $5,
               phone_masked = $6, issues = issues + 1, locked_until = NULL
           WHERE contract_id = $1 RETURNING issues""",
        contract_id,
        code_hash(cipher, contract_id, salt, code),
        salt,
        now,
        expires_at,
        phone_masked,
    )
    return Issued(code, issue_no, expires_at, policy.attempts_max - row["wrong_attempts"])


async def void(conn: asyncpg.Connection, contract_id: int, issue_no: int) -> None:
    """The SMS of issue `issue_no` did not go: its code is dropped and another may be
    asked for at once (as if it had not been issued)."""
    await conn.execute(
        """UPDATE contract_otp SET code_hash = NULL, salt = NULL, issued_at = NULL,
               expires_at = NULL
           WHERE contract_id = $1 AND issues = $2""",
        contract_id,
        issue_no,
    )


async def check(
    conn: asyncpg.Connection, cipher: PiiCipher, policy: OtpPolicy, contract_id: int, code: str
) -> Checked:
    """Check `code` and record the outcome in the caller's transaction (which must commit
    even when the code was wrong: the count is what makes the lockout)."""
    row, now = await _row(conn, contract_id)
    if row["locked_until"] is not None and row["locked_until"] > now:
        return Checked(Verdict.LOCKED, retry_after_s=_seconds_until(row["locked_until"], now))
    if row["code_hash"] is None:
        return Checked(Verdict.NOT_ISSUED)
    if row["expires_at"] <= now:
        return Checked(Verdict.EXPIRED)
    expected = bytes(row["code_hash"])
    if hmac.compare_digest(expected, code_hash(cipher, contract_id, bytes(row["salt"]), code)):
        await conn.execute(
            """UPDATE contract_otp SET code_hash = NULL, salt = NULL, wrong_attempts = 0
               WHERE contract_id = $1""",
            contract_id,
        )
        return Checked(Verdict.OK, issued_at=row["issued_at"])
    wrong = row["wrong_attempts"] + 1
    if wrong >= policy.attempts_max:
        await conn.execute(
            """UPDATE contract_otp SET code_hash = NULL, salt = NULL, wrong_attempts = 0,
                   locked_until = $2 WHERE contract_id = $1""",
            contract_id,
            now + _s(policy.lock_s),
        )
        return Checked(Verdict.LOCKED, retry_after_s=policy.lock_s)
    await conn.execute(
        "UPDATE contract_otp SET wrong_attempts = $2 WHERE contract_id = $1", contract_id, wrong
    )
    return Checked(Verdict.WRONG, attempts_left=policy.attempts_max - wrong)


def refusal(checked: Checked) -> ApiError:
    """The problem answering a code that did not sign."""
    assert checked.verdict is not Verdict.OK
    if checked.verdict is Verdict.LOCKED:
        return TooManyRequests(
            "OTP_LOCKED",
            "too many wrong codes: signing this contract is locked; "
            f"try again in {checked.retry_after_s} s with a new code",
            headers={"Retry-After": str(checked.retry_after_s)},
        )
    if checked.verdict is Verdict.NOT_ISSUED:
        return Unprocessable(
            "OTP_NOT_ISSUED", "no live code: ask for one (POST /v1/contracts/{id}/otp)"
        )
    if checked.verdict is Verdict.EXPIRED:
        return Unprocessable("OTP_EXPIRED", "the code has expired: ask for a new one")
    return Unprocessable(
        "OTP_INVALID", f"the code is wrong; {checked.attempts_left} attempts left before a lock"
    )


def _locked(until: dt.datetime, now: dt.datetime) -> TooManyRequests:
    wait_s = _seconds_until(until, now)
    return TooManyRequests(
        "OTP_LOCKED",
        f"too many wrong codes: signing this contract is locked for {wait_s} s",
        headers={"Retry-After": str(wait_s)},
    )


def _s(seconds: int) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)

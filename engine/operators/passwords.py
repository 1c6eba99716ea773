"""Operators' passwords: argon2id (argon2-cffi), parameters from settings.

Hashing is CPU and memory work: the HTTP layer runs it off the event loop."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PASSWORD_CHARS_MIN = 12
PASSWORD_CHARS_MAX = 128


class PasswordRuleError(ValueError):
    pass


def hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def check_rules(password: str, login: str) -> None:
    if not PASSWORD_CHARS_MIN <= len(password) <= PASSWORD_CHARS_MAX:
        raise PasswordRuleError(
            f"a password is {PASSWORD_CHARS_MIN}..{PASSWORD_CHARS_MAX} characters"
        )
    if login and login.lower() in password.lower():
        raise PasswordRuleError("a password may not contain the login")


def verify(ph: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return ph.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False

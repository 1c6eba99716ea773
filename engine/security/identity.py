"""Customer identity data: parse and check at the edge, mask whenever shown.

    "11010519491231002x" --parse_id_number--> IdNumber("11010519491231002X", 1949-12-31, male=False)
                          6 region | 8 birth date YYYYMMDD | 3 sequence (odd: male) | 1 check
    "+86 138 1234 5678"  --parse_phone-----> "13812345678"
    "6222 0212 3456 7890 128" --parse_bank_card--> "6222021234567890128"  (Luhn checked)

Every parser returns the normalized form that is stored, indexed
(`engine.security.pii`) and compared; a refusal is an `IdentityError` with a stable
`code` the API returns as is. Error details never repeat the input: it may be
a real person's number.

Masking is one rule everywhere, the same as `engine.runtime.logs.mask_digits`: keep
the first 3 and the last 4 characters, replace each one between with '*'.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec

# GB 11643-1999: weight of each of the first 17 digits, and the check
# character for (weighted sum mod 11).
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"
_ID_BIRTH_DATE_MIN: Final = dt.date(1900, 1, 1)

# [0-9], never \d: \d also matches Arabic-Indic, full-width and other digits.
_ID_NUMBER_RE: Final = re.compile(r"[1-9][0-9]{16}[0-9X]")
_PHONE_RE: Final = re.compile(r"(?:\+?86)?(1[3-9][0-9]{9})")
_BANK_CARD_RE: Final = re.compile(r"[0-9]{16,19}")
_WHITESPACE_RE: Final = re.compile(r"\s+")
# Inputs are short; anything longer is refused before any other work.
_INPUT_CHARS_MAX: Final = 64

MASK_KEEP_HEAD: Final = 3
MASK_KEEP_TAIL: Final = 4


class IdentityError(ValueError):
    """An identity field is refused; `code` is stable, `detail` is for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class IdNumber(msgspec.Struct, frozen=True):
    """A checked 18-character PRC resident ID number and what it encodes."""

    value: str  # normalized: 17 digits and a check digit or upper-case 'X'
    birth_date: dt.date
    male: bool

    def __repr__(self) -> str:
        # Tracebacks and test failures print reprs; never the full number.
        return (
            f"IdNumber(value={mask_id_number(self.value)!r}, "
            f"birth_date={self.birth_date!r}, male={self.male!r})"
        )


def id_number_check_char(first17: str) -> str:
    """The check character (a digit or 'X') completing 17 leading digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("an ID number check character needs exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def parse_id_number(text: str, *, today: dt.date) -> IdNumber:
    """Checks format, check character and birth date (1900-01-01 .. `today`)."""
    value = text.strip().upper()
    if len(value) > _INPUT_CHARS_MAX or not _ID_NUMBER_RE.fullmatch(value):
        raise IdentityError("ID_NUMBER_INVALID", "an ID number is 17 digits and a check digit or X")
    if id_number_check_char(value[:17]) != value[17]:
        raise IdentityError("ID_NUMBER_CHECKSUM", "the ID number's check character is wrong")
    birth_date = _birth_date(value[6:14], today=today)
    # The 17th character is the sequence's last digit: odd for men, even for women.
    return IdNumber(value=value, birth_date=birth_date, male=int(value[16]) % 2 == 1)


def _birth_date(yyyymmdd: str, *, today: dt.date) -> dt.date:
    try:
        birth = dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        raise IdentityError(
            "ID_NUMBER_BIRTH_DATE", "the ID number's birth date is not a date"
        ) from None
    if birth > today:
        raise IdentityError("ID_NUMBER_BIRTH_DATE", "the ID number's birth date is in the future")
    if birth < _ID_BIRTH_DATE_MIN:
        raise IdentityError("ID_NUMBER_BIRTH_DATE", "the ID number's birth date is before 1900")
    return birth


def make_id_number(region6: str, birth: dt.date, seq3: str) -> str:
    """A valid ID number (check character appended), for tests and seeding."""
    if not re.fullmatch(r"[1-9][0-9]{5}", region6):
        raise ValueError("region6 must be 6 ASCII digits, the first not 0")
    if not re.fullmatch(r"[0-9]{3}", seq3):
        raise ValueError("seq3 must be 3 ASCII digits")
    first17 = f"{region6}{birth.year:04d}{birth.month:02d}{birth.day:02d}{seq3}"
    return first17 + id_number_check_char(first17)


def age_on(birth: dt.date, on: dt.date) -> int:
    """Completed years on `on`; someone born on 29 February turns older on 1 March."""
    if on < birth:
        raise ValueError("age_on: the date is before the birth date")
    had_birthday = (on.month, on.day) >= (birth.month, birth.day)
    return on.year - birth.year - (0 if had_birthday else 1)


def parse_phone(text: str) -> str:
    """A mainland mobile number, 11 digits; spaces and a +86 or 86 prefix removed."""
    compact = _WHITESPACE_RE.sub("", text)
    match = _PHONE_RE.fullmatch(compact) if len(compact) <= _INPUT_CHARS_MAX else None
    if match is None:
        raise IdentityError(
            "PHONE_INVALID", "a mobile number is 11 digits starting 13 to 19, optional +86"
        )
    return match.group(1)


def parse_bank_card(text: str) -> str:
    """A card number of 16 to 19 digits (spaces removed) passing the Luhn check."""
    compact = _WHITESPACE_RE.sub("", text)
    if len(compact) > _INPUT_CHARS_MAX or not _BANK_CARD_RE.fullmatch(compact):
        raise IdentityError("BANK_CARD_INVALID", "a bank card number is 16 to 19 digits")
    if not luhn_valid(compact):
        raise IdentityError("BANK_CARD_CHECKSUM", "the bank card number's check digit is wrong")
    return compact


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    # From the right: every second digit doubled, and 9 taken off a two-digit result.
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def mask_id_number(value: str) -> str:
    return _mask_middle(value)


def mask_phone(value: str) -> str:
    return _mask_middle(value)


def mask_bank_card(value: str) -> str:
    return _mask_middle(value)


def _mask_middle(value: str) -> str:
    """First 3 and last 4 kept, same length; too short to hide anything: all '*'."""
    hidden_chars = len(value) - MASK_KEEP_HEAD - MASK_KEEP_TAIL
    if hidden_chars < 1:
        return "*" * len(value)
    return value[:MASK_KEEP_HEAD] + "*" * hidden_chars + value[-MASK_KEEP_TAIL:]

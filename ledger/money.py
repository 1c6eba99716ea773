"""Amounts and rates at the edge: decimal strings outside, integer fen inside.

    "5000.00"  --parse_amount-->  500000 (fen, int)  --format_fen-->  "5000.00"
    "4.35"     --parse_rate_pct-->  Decimal("4.35")   (percent per year)

Rounding to the fen is half-up and happens once per computed amount
(`round_fen`), never on intermediate products. Floats are refused: a float
that reaches a money path is a bug, not an input.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

FEN_PER_YUAN = 100
# 10^13 fen = 100 billion yuan: far above any loan, far below 2^63.
AMOUNT_FEN_MAX = 10**13
RATE_PCT_MAX = Decimal("36")  # the judicial cap on private lending; no product goes near it

_AMOUNT_RE = re.compile(r"^(0|[1-9][0-9]{0,12})\.([0-9]{2})$")
_RATE_RE = re.compile(r"^(0|[1-9][0-9]{0,2})(\.[0-9]{1,6})?$")
_ONE = Decimal(1)


class MoneyFormatError(ValueError):
    """A decimal string that is not a valid amount or rate; `code` names why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_amount(text: str, *, allow_zero: bool = False) -> int:
    """Parse "1234.56" (exactly two decimals, no sign, no exponent) into fen."""
    if not isinstance(text, str):
        raise MoneyFormatError(
            "AMOUNT_NOT_STRING", 'amount must be a decimal string like "5000.00"'
        )
    match = _AMOUNT_RE.match(text)
    if match is None:
        raise MoneyFormatError(
            "AMOUNT_INVALID", f'amount {text[:32]!r} must have exactly two decimals, like "5000.00"'
        )
    fen = int(match.group(1)) * FEN_PER_YUAN + int(match.group(2))
    if fen == 0 and not allow_zero:
        raise MoneyFormatError("AMOUNT_NOT_POSITIVE", "amount must be greater than zero")
    if fen > AMOUNT_FEN_MAX:
        raise MoneyFormatError("AMOUNT_TOO_LARGE", "amount is beyond the engine's limit")
    return fen


def format_fen(fen: int) -> str:
    """Integer fen to a decimal string with two decimals: 500000 -> "5000.00"."""
    assert isinstance(fen, int) and not isinstance(fen, bool), fen
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), FEN_PER_YUAN)
    return f"{sign}{yuan}.{cents:02d}"


def parse_rate_pct(text: str) -> Decimal:
    """Parse an annual rate in percent ("4.35") into a Decimal, 0 <= rate <= RATE_PCT_MAX."""
    if not isinstance(text, str) or _RATE_RE.match(text) is None:
        raise MoneyFormatError(
            "RATE_INVALID",
            'annual_rate_pct must be a decimal string like "4.35" (at most 6 decimals)',
        )
    try:
        rate = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already refused it
        raise MoneyFormatError("RATE_INVALID", "annual_rate_pct is not a number") from exc
    if rate > RATE_PCT_MAX:
        raise MoneyFormatError("RATE_TOO_HIGH", f"annual_rate_pct must not exceed {RATE_PCT_MAX}")
    return rate


def format_rate_pct(rate: Decimal) -> str:
    """A rate in percent as a plain decimal string without exponent or trailing zeros past 2 dp."""
    text = format(rate.normalize(), "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def round_fen(value: Decimal) -> int:
    """Round an exact Decimal amount of fen to an integer fen, half-up. The one rounding point."""
    assert isinstance(value, Decimal), type(value)
    return int(value.quantize(_ONE, rounding=ROUND_HALF_UP))


def round_fen_ratio(numerator: int, denominator: int) -> int:
    """Round the exact fraction `numerator / denominator` fen to an integer fen, half-up.

    The integer twin of `round_fen` (same rule: ties away from zero) for the
    schedule's hot path, where every amount is an exact ratio of integers and
    building Decimals would only cost time.
    """
    assert denominator > 0, denominator
    if numerator >= 0:
        return (2 * numerator + denominator) // (2 * denominator)
    return -((-2 * numerator + denominator) // (2 * denominator))

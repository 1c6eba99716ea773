"""Interest rates: from a product's pricing to the exact rate of one period.

    LPR 3.45 % + spread 145 bp  --product_rate_pct-->  4.90 % a year
    4.90 % within band [4.00, 6.00]  --customer_rate_pct-->  4.90 %
    4.90 %  --monthly_rate-->  4.90 / 100 / 12     (a regular monthly period)
            --daily_rate-->    4.90 / 100 / 360    (per actual day)

Annual rates are `Decimal` percents with at most `RATE_DECIMALS_MAX` decimals.
For display and for callers that want a Decimal, `monthly_rate` and
`daily_rate` divide inside a local 40-digit context. The schedule's hot path
uses `RateRatio` instead: the rate as an exact fraction of two integers, so
that `balance × rate` is exact and rounded once (`money.round_fen_ratio`).
"""

from __future__ import annotations

from decimal import Context, Decimal
from math import gcd
from typing import NamedTuple

from ledger.money import RATE_PCT_MAX, round_fen_ratio

RATE_DECIMALS_MAX = 6
BASIS_POINTS_PER_PERCENT = 100
# A spread beyond ±10 percentage points is a typing error, not a price.
SPREAD_BP_ABS_MAX = 1000
MONTHS_PER_YEAR = 12
DAYS_PER_YEAR = 360  # the interest year of MONEY.md, not the calendar year

_PERCENT = 100
_RATE_CONTEXT = Context(prec=40)
_RATE_DENOMINATOR_UNIT = 10**RATE_DECIMALS_MAX


class RateError(ValueError):
    """A rate outside what the engine accepts; `code` names why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class RateRatio(NamedTuple):
    """A rate per period as the exact fraction `numerator / denominator`."""

    numerator: int
    denominator: int

    def interest_fen(self, balance_fen: int) -> int:
        """`balance × rate`, rounded half-up to the fen once."""
        return round_fen_ratio(balance_fen * self.numerator, self.denominator)


class RateBand(NamedTuple):
    """A product's allowed annual rates in percent, both ends included."""

    floor_pct: Decimal
    ceiling_pct: Decimal


def check_annual_rate_pct(annual_rate_pct: Decimal) -> None:
    """Refuse anything but a finite Decimal percent in [0, RATE_PCT_MAX], <= 6 decimals."""
    if not isinstance(annual_rate_pct, Decimal) or not annual_rate_pct.is_finite():
        raise RateError("RATE_NOT_DECIMAL", "annual rate must be a finite Decimal percent")
    if annual_rate_pct < 0:
        raise RateError("RATE_NEGATIVE", "annual rate must not be negative")
    if annual_rate_pct > RATE_PCT_MAX:
        raise RateError("RATE_TOO_HIGH", f"annual rate must not exceed {RATE_PCT_MAX} %")
    _, denominator = annual_rate_pct.as_integer_ratio()
    if _RATE_DENOMINATOR_UNIT % denominator != 0:
        raise RateError(
            "RATE_TOO_PRECISE", f"annual rate has more than {RATE_DECIMALS_MAX} decimals"
        )


def product_rate_pct(lpr_pct: Decimal, spread_bp: int) -> Decimal:
    """A product's annual rate: the loan prime rate plus a spread in basis points.

    The spread may be negative (LPR − 20 bp); the result must still be a valid
    rate. Addition of Decimals is exact, so no rounding happens here.
    """
    check_annual_rate_pct(lpr_pct)
    if isinstance(spread_bp, bool) or not isinstance(spread_bp, int):
        raise RateError("SPREAD_NOT_INTEGER", "spread must be a whole number of basis points")
    if abs(spread_bp) > SPREAD_BP_ABS_MAX:
        raise RateError("SPREAD_TOO_LARGE", f"spread must be within ±{SPREAD_BP_ABS_MAX} bp")
    rate_pct = lpr_pct + Decimal(spread_bp).scaleb(-2)
    check_annual_rate_pct(rate_pct)
    return rate_pct


def check_band(band: RateBand) -> None:
    """A band's ends are valid rates and the floor does not exceed the ceiling."""
    check_annual_rate_pct(band.floor_pct)
    check_annual_rate_pct(band.ceiling_pct)
    if band.floor_pct > band.ceiling_pct:
        raise RateError("BAND_INVERTED", "rate band floor is above its ceiling")


def customer_rate_pct(requested_pct: Decimal, band: RateBand) -> Decimal:
    """A customer's rate, which must lie within the product's band; refused otherwise.

    Refusing rather than clamping: a rate outside the band means the pricing
    upstream is wrong, and silently moving it would hide that.
    """
    check_band(band)
    check_annual_rate_pct(requested_pct)
    if requested_pct < band.floor_pct:
        raise RateError("RATE_BELOW_FLOOR", f"rate is below the product floor {band.floor_pct} %")
    if requested_pct > band.ceiling_pct:
        raise RateError(
            "RATE_ABOVE_CEILING", f"rate is above the product ceiling {band.ceiling_pct} %"
        )
    return requested_pct


def clamp_to_band(requested_pct: Decimal, band: RateBand) -> Decimal:
    """The nearest rate within the band: for pricing rules that ask for clamping."""
    check_band(band)
    check_annual_rate_pct(requested_pct)
    return min(max(requested_pct, band.floor_pct), band.ceiling_pct)


def monthly_rate(annual_rate_pct: Decimal) -> Decimal:
    """The monthly rate as a fraction (not a percent): annual / 100 / 12, 40 digits."""
    check_annual_rate_pct(annual_rate_pct)
    return _RATE_CONTEXT.divide(annual_rate_pct, Decimal(_PERCENT * MONTHS_PER_YEAR))


def daily_rate(annual_rate_pct: Decimal) -> Decimal:
    """The daily rate as a fraction (not a percent): annual / 100 / 360, 40 digits."""
    check_annual_rate_pct(annual_rate_pct)
    return _RATE_CONTEXT.divide(annual_rate_pct, Decimal(_PERCENT * DAYS_PER_YEAR))


def ratio_of(numerator: int, denominator: int) -> RateRatio:
    """A RateRatio in lowest terms (smaller integers keep the powers of `1 + r` cheap)."""
    assert numerator >= 0 and denominator > 0, (numerator, denominator)
    divisor = gcd(numerator, denominator)
    return RateRatio(numerator // divisor, denominator // divisor)


def monthly_rate_ratio(annual_rate_pct: Decimal) -> RateRatio:
    """The exact monthly rate: annual / 100 / 12 as a fraction of integers."""
    numerator, denominator = annual_rate_pct.as_integer_ratio()
    return ratio_of(numerator, denominator * _PERCENT * MONTHS_PER_YEAR)


def daily_rate_ratio(annual_rate_pct: Decimal, days: int = 1) -> RateRatio:
    """The exact rate of `days` actual days: annual / 100 / 360 × days."""
    assert days >= 0, days
    numerator, denominator = annual_rate_pct.as_integer_ratio()
    return ratio_of(numerator * days, denominator * _PERCENT * DAYS_PER_YEAR)

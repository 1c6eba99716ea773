"""Double-entry postings, checked before they reach the database.

    Posting(txn_id, customer_id, kind, ref_id, business_date, legs=[
        Leg(Code.LOAN_PRINCIPAL,        owner_id=loan_id, amount_fen=+500000),  # debit
        Leg(Code.DISBURSEMENT_CLEARING, owner_id=None,    amount_fen=-500000),  # credit
    ])

A posting has at least two legs, no zero leg, and its legs sum to zero
(`UnbalancedPostingError` otherwise). Loan-scope legs name their loan; internal
legs leave `owner_id` as None and the stripe is chosen from the transaction
ID. The database checks the same pair rule again at commit.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from ledger.chart import INTERNAL_STRIPES, Code, is_internal

LEGS_MAX = 64


class AccountingError(ValueError):
    """Base of the ledger's refusals; `code` is stable for API errors."""

    code = "LEDGER_ERROR"


class UnbalancedPostingError(AccountingError):
    """The legs of a posting do not sum to zero, or there are fewer than two."""

    code = "LEDGER_UNBALANCED"


class InvalidLegError(AccountingError):
    """A leg is zero, names no loan for a loan account, or a loan for an internal one."""

    code = "LEDGER_INVALID_LEG"


class Leg(msgspec.Struct, frozen=True):
    code: Code
    owner_id: int | None
    amount_fen: int
    # A loan leg's customer, where a posting spans several (the day-end's): else the
    # posting's customer.
    customer_id: int | None = None


class Posting(msgspec.Struct, frozen=True):
    txn_id: int
    customer_id: int | None
    kind: str
    ref_id: int | None
    business_date: dt.date
    legs: tuple[Leg, ...]

    def __post_init__(self) -> None:
        check_legs(self.legs)

    def stripe(self) -> int:
        """The internal accounts' stripe of this posting. A multiplicative hash of the
        whole ID: its low bits alone (worker and sequence) would crowd a few stripes."""
        mixed = (self.txn_id * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        return (mixed >> 32) % INTERNAL_STRIPES


def check_legs(legs: tuple[Leg, ...]) -> None:
    if not 2 <= len(legs) <= LEGS_MAX:
        raise UnbalancedPostingError(f"a posting needs 2..{LEGS_MAX} legs, got {len(legs)}")
    for leg in legs:
        if type(leg.amount_fen) is not int or leg.amount_fen == 0:
            raise InvalidLegError(
                f"leg {leg.code} has amount {leg.amount_fen!r}: must be a non-zero int"
            )
        if is_internal(leg.code) != (leg.owner_id is None):
            raise InvalidLegError(f"leg {leg.code} owner {leg.owner_id!r} does not fit its scope")
    total = sum(leg.amount_fen for leg in legs)
    if total != 0:
        raise UnbalancedPostingError(f"legs sum to {total} fen, not zero")


def reversal(original: Posting, txn_id: int, kind: str, business_date: dt.date) -> Posting:
    """The posting that undoes `original` leg for leg (corrections never edit history)."""
    return Posting(
        txn_id=txn_id,
        customer_id=original.customer_id,
        kind=kind,
        ref_id=original.ref_id,
        business_date=business_date,
        legs=tuple(Leg(leg.code, leg.owner_id, -leg.amount_fen) for leg in original.legs),
    )

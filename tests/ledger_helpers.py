"""Shared helpers of the ledger tests: fresh owner IDs and simple postings."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets

from ledger.chart import Code
from ledger.postings import Leg, Posting

_counter = itertools.count(1)
TODAY = dt.date(2026, 11, 23)


def fresh_id() -> int:
    """A unique positive 63-bit ID for test rows (random high bits, counter low bits)."""
    return (secrets.randbits(40) << 20 | next(_counter)) & ((1 << 62) - 1) | 1 << 61


def two_leg(loan_id: int, customer_id: int, amount_fen: int, txn_id: int | None = None) -> Posting:
    """Dr the loan's principal, Cr disbursement clearing (a drawdown's shape)."""
    return Posting(
        txn_id=txn_id or fresh_id(),
        customer_id=customer_id,
        kind="test",
        ref_id=loan_id,
        business_date=TODAY,
        legs=(
            Leg(Code.LOAN_PRINCIPAL, loan_id, amount_fen),
            Leg(Code.DISBURSEMENT_CLEARING, None, -amount_fen),
        ),
    )

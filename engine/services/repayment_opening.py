"""Phase A of repayments at once, grouped: `open_repayments` (ledger migration 0023).

    open_at_once (engine/services/repayments.py) ─► expecting(shard): read, size
        ─► book(shard, args): `open_repayments` with the openings of the shard database
           that came meanwhile (the drawdowns' lanes, `booking_batch.GroupBatches`)
    "booked": written with its durable record; with a lease, the debit's outbox row is
    already the request's inline claim (no claim statement, no commit of its own).
    "replay": the key's record exists. "recheck" (a loan changed or held since the read,
    a call that failed whole: a lock held past 250 ms, a replayed nonce): the locked
    transaction redoes it and names the refusal.

No two openings of one call share a loan or an idempotency key (the second waits for
the next call, which sees the first one's hold); all of a call share the business date
and the lease. `repayment_batch_max` 1 opens each alone through the same function.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

import asyncpg
import msgspec

from engine.runtime import metrics
from engine.services.booking_batch import Args, GroupBatches, GroupKind
from engine.stores.outbox import Claimed
from sharding.pools import ShardPools

# One opening's arguments (`Openings.args`), in `open_repayments`' order: the durable
# record 0-5, the repayment 6-14 (13: the business date), its loans 15 (a list of
# (loan_id, loan_xmin, plan_xmin)), the debit's outbox row 16-17, the lease 18 (None:
# left pending for the relay).
_KEY_CHANNEL, _KEY, _R_ID, _CUSTOMER, _TOTAL, _CIPHERTEXT, _DATE = 0, 1, 6, 7, 10, 12, 13
_LOANS, _OUTBOX_ID, _PAYLOAD, _LEASE = 15, 16, 17, 18
ARGS: Final = 19
SQL: Final = "SELECT outcomes, sent_at FROM open_repayments({})".format(
    ", ".join(f"${n}" for n in range(1, 24))
)
# "booked" travels through the lanes (which carry one string per item) with the send
# time the call stamped on its claimed rows: "booked 2026-12-03T15:40:00.123+00:00".
BOOKED: Final = "booked"


class Openings(GroupKind):
    name = "repayment_opening"
    args = ARGS

    def keys(self, args: Args) -> tuple[object, tuple[object, ...]]:
        loans = args[_LOANS]
        assert isinstance(loans, list)
        return (args[_DATE], args[_LEASE]), (
            ("key", args[_KEY_CHANNEL], args[_KEY]),
            *(("loan", loan[0]) for loan in loans),
        )

    async def call(
        self, conn: asyncpg.Connection, items: Sequence[Args], lock_timeout: str | None
    ) -> object:
        row = await conn.fetchrow(SQL, *batch_args(items, lock_timeout))
        assert row is not None
        sent_at: dt.datetime = row["sent_at"]
        return [
            f"{BOOKED} {sent_at.isoformat()}" if outcome == BOOKED else outcome
            for outcome in row["outcomes"]
        ]

    def observe(self, n: int) -> None:
        metrics.REPAYMENT_OPENING_BATCH.observe(n)

    def failed(self) -> None:
        metrics.REPAYMENT_OPENING_BATCH_FAILED.inc()


OPENINGS: Final = Openings()


class OpeningBatches(GroupBatches):
    """The repayments' opening lanes (one per shard database, per engine worker)."""

    def __init__(self, pools: ShardPools, batch_max: int, gather_s: float, in_flight: int) -> None:
        super().__init__(pools, OPENINGS, batch_max, gather_s, in_flight)


def batch_args(items: Sequence[Args], lock_timeout: str | None) -> list[object]:
    """`open_repayments`' arguments: each of an opening's as an array but the business
    date and the lease (one per call), the loans flattened, each naming its opening's
    index (from 1); last the lock time-out (None: the caller's)."""
    out: list[object] = []
    for index in range(_LOANS):
        column = [item[index] for item in items]
        out.append(column[0] if index == _DATE else column)
    loan_r: list[int] = []
    loan_columns: tuple[list[object], ...] = ([], [], [])
    for r, item in enumerate(items, start=1):
        loans = item[_LOANS]
        assert isinstance(loans, list)
        for loan in loans:
            loan_r.append(r)
            for column, value in zip(loan_columns, loan, strict=True):
                column.append(value)
    out.append(loan_r)
    out.extend(loan_columns)
    out.extend([item[index] for item in items] for index in range(_LOANS + 1, _LEASE))
    out.append(items[0][_LEASE])
    out.append(lock_timeout)
    return out


async def alone(conn: asyncpg.Connection, args: Args) -> str:
    """One opening through `open_repayments`, waiting for locks as long as the
    connection's settings allow (no lanes: the relay's and the tests' services)."""
    outcomes = await OPENINGS.call(conn, [args], None)
    assert isinstance(outcomes, list) and len(outcomes) == 1, outcomes
    return str(outcomes[0])


def claimed_debit(args: Args, sent_at: dt.datetime) -> Opened:
    """The debit's outbox row as `open_repayments` wrote it under the request's claim
    (what `outbox.claim_one` would have returned), and the card's ciphertext."""
    repayment_id, customer_id, total_fen, ciphertext, outbox_id, payload = (
        args[_R_ID], args[_CUSTOMER], args[_TOTAL], args[_CIPHERTEXT], args[_OUTBOX_ID],
        args[_PAYLOAD],
    )  # fmt: skip
    assert isinstance(repayment_id, int) and isinstance(customer_id, int)
    assert isinstance(total_fen, int) and isinstance(outbox_id, int)
    assert isinstance(ciphertext, bytes) and isinstance(payload, str)
    claimed = Claimed(
        outbox_id=outbox_id,
        customer_id=customer_id,
        kind="debit",
        ref_id=repayment_id,
        amount_fen=total_fen,
        payload=msgspec.json.decode(payload),
        attempts=1,
        last_sent_at=sent_at,
        created_at=sent_at,  # the row's default, now(): the same transaction's time
        prior_state="pending",
    )
    return Opened(claimed, ciphertext)


def sent_at_of(outcome: str) -> dt.datetime | None:
    """The send time of a "booked" outcome (None for any other)."""
    word, _, stamp = outcome.partition(" ")
    return dt.datetime.fromisoformat(stamp) if word == BOOKED and stamp else None


class Opened(msgspec.Struct, frozen=True):
    """A repayment opened at once whose debit row the request holds as its claim, and
    the card's ciphertext, for the inline debit (engine/relay/inline.py)."""

    claimed: Claimed
    card_ciphertext: bytes

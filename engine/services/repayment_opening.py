"""Phase A of repayments at once, grouped: `open_repayments` (ledger migration 0022).

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
from typing import Any, Final

import asyncpg
import msgspec

from engine.runtime import metrics
from engine.services.booking_batch import (
    Args,
    GroupBatches,
    GroupKind,
    flattened_rows,
    item_columns,
)
from engine.stores.outbox import Claimed
from sharding.pools import ShardPools

# One opening's arguments (`Openings.args`), in `open_repayments`' order: the durable
# record 0-5, the repayment 6-14 (13: the business date), its loans 15 (a list of
# (loan_id, loan_xmin, plan_xmin)), the debit's outbox row 16-17, the lease 18 (None:
# left pending for the relay).
_KEY_CHANNEL, _KEY, _R_ID, _CUSTOMER, _TENANT, _CHANNEL, _TOTAL = 0, 1, 6, 7, 8, 9, 10
_MASKED, _CIPHERTEXT, _DATE, _ITEMS, _LOANS, _OUTBOX_ID, _PAYLOAD, _LEASE = range(11, 19)
ARGS: Final = 19
SQL: Final = "SELECT outcomes, sent_at, opened_xid FROM open_repayments({})".format(
    ", ".join(f"${n}" for n in range(1, 24))
)
# "booked" travels through the lanes (which carry one string per item) with the send
# time the call stamped on its claimed rows and its transaction's ID (the loans' new
# row version): "booked 2026-12-03T15:40:00.123+00:00 81234".
BOOKED: Final = "booked"


class Openings(GroupKind):
    name = "repayment_opening"
    args = ARGS
    batch_size = metrics.REPAYMENT_OPENING_BATCH
    batch_failures = metrics.REPAYMENT_OPENING_BATCH_FAILED

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
        booked = f"{BOOKED} {row['sent_at'].isoformat()} {row['opened_xid']}"
        return [booked if outcome == BOOKED else outcome for outcome in row["outcomes"]]


OPENINGS: Final = Openings()


class OpeningBatches(GroupBatches):
    """The repayments' opening lanes (one per shard database, per engine worker)."""

    def __init__(self, pools: ShardPools, batch_max: int, gather_s: float, in_flight: int) -> None:
        super().__init__(pools, OPENINGS, batch_max, gather_s, in_flight)


def batch_args(items: Sequence[Args], lock_timeout: str | None) -> list[object]:
    """`open_repayments`' arguments: each of an opening's as an array but the business
    date and the lease (one per call), the loans flattened, each naming its opening's
    index (from 1); last the lock time-out (None: the caller's)."""
    out = item_columns(items, _LOANS, _DATE)
    out.extend(flattened_rows(items, _LOANS, 3))  # loan_id, loan_xmin, plan_xmin
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


def claimed_debit(args: Args, booked: Booked, read: list[dict[str, Any]]) -> Opened:
    """The debit's outbox row as `open_repayments` wrote it under the request's claim
    (what `outbox.claim_one` would have returned), the card's ciphertext, and phase A's
    read as phase B would read it after this opening (`phase_b_read`)."""
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
        last_sent_at=booked.sent_at,
        created_at=booked.sent_at,  # the row's default, now(): the same transaction's time
        prior_state="pending",
    )
    return Opened(claimed, ciphertext, phase_b_read(args, booked, read))


def phase_b_read(
    args: Args, booked: Booked, read: list[dict[str, Any]]
) -> tuple[dict[str, Any], ...]:
    """What phase B's read (`repayment_completion.READ_SQL`) would return right after
    this opening: phase A's rows of the loans (with their receivables), held by the
    repayment in the opening's row version, beside the repayment as it was written.
    `complete_repayments` compares every row version and receivable under its locks, so
    a loan that changed in between (a day-end's accrual) is sent back, never booked."""
    repayment = {
        "r_repayment_id": args[_R_ID],
        "r_customer_id": args[_CUSTOMER],
        "r_tenant_id": args[_TENANT],
        "r_channel_id": args[_CHANNEL],
        "r_status": "processing",
        "r_total_fen": args[_TOTAL],
        "r_debit_from_masked": args[_MASKED],
        "r_business_date": args[_DATE],
        "r_request_items": args[_ITEMS],
        "r_channel_key": args[_KEY],
    }
    return tuple(
        record | repayment | {"loan_xmin": booked.xid, "pending_repayment_id": args[_R_ID]}
        for record in read
    )


class Booked(msgspec.Struct, frozen=True):
    sent_at: dt.datetime
    xid: str


def booked_of(outcome: str) -> Booked | None:
    """The send time and row version of a "booked" outcome (None for any other)."""
    word, _, rest = outcome.partition(" ")
    if word != BOOKED:
        return None
    stamp, _, xid = rest.partition(" ")
    return Booked(dt.datetime.fromisoformat(stamp), xid)


class Opened(msgspec.Struct, frozen=True):
    """A repayment opened at once whose debit row the request holds as its claim, and
    the card's ciphertext, for the inline debit (engine/relay/inline.py)."""

    claimed: Claimed
    card_ciphertext: bytes
    read: tuple[dict[str, Any], ...]  # phase B's read, as it would find it

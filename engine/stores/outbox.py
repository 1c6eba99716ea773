"""The outbox: instructions to external systems, written with the business change.

`enqueue` runs inside the caller's transaction. The relay `claim`s ready rows
(FOR UPDATE SKIP LOCKED, so several relays share the work), each under a lease;
a row whose lease ran out while `sending` — its relay died mid-call — comes
back as needing an inquiry, never a second send. See the state drawing in
ledger/migrations/0003_outbox.sql.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
import msgspec

_CLAIM_SQL = """
WITH ready AS (
    SELECT outbox_id, state AS prior_state FROM outbox
    WHERE done_at IS NULL AND next_attempt_at <= now()  -- not final (migration 0008)
      AND (lease_until IS NULL OR lease_until < now())
      AND lane = ANY($3::text[])  -- ledger 0025
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox o
SET state = CASE WHEN ready.prior_state = 'pending' THEN 'sending' ELSE 'unknown' END,
    lease_until = now() + make_interval(secs => $2),
    attempts = o.attempts + 1,
    -- Only the latest send can have reached the other side: a row goes back to
    -- pending only when its send surely did not leave.
    last_sent_at = CASE WHEN ready.prior_state = 'pending' THEN now() ELSE o.last_sent_at END
FROM ready
WHERE o.outbox_id = ready.outbox_id
RETURNING o.outbox_id, o.customer_id, o.kind, o.ref_id, o.amount_fen, o.payload, o.attempts,
          o.last_sent_at, o.created_at, ready.prior_state
"""

_CLAIM_ONE_SQL = """
UPDATE outbox SET state = 'sending', lease_until = now() + make_interval(secs => $3),
    attempts = attempts + 1, last_sent_at = now()
WHERE ref_id = $1 AND kind = $2 AND state = 'pending'
RETURNING outbox_id, customer_id, kind, ref_id, amount_fen, payload, attempts, last_sent_at,
          created_at, 'pending' AS prior_state
"""


class Claimed(msgspec.Struct, frozen=True):
    outbox_id: int
    customer_id: int
    kind: str
    ref_id: int
    amount_fen: int | None
    payload: dict[str, Any]
    attempts: int
    last_sent_at: dt.datetime | None
    created_at: dt.datetime
    prior_state: str

    @property
    def needs_inquiry(self) -> bool:
        """A money movement that may already have reached core: ask, never resend."""
        return self.kind != "sms" and self.prior_state != "pending"


def _claimed(row: asyncpg.Record) -> Claimed:
    values = {name: row[name] for name in Claimed.__struct_fields__}  # a join may add more
    payload = values["payload"]
    values["payload"] = (
        msgspec.json.decode(payload) if isinstance(payload, (str, bytes)) else payload
    )
    return Claimed(**values)


async def enqueue(
    conn: asyncpg.Connection,
    *,
    outbox_id: int,
    customer_id: int,
    kind: str,
    ref_id: int,
    amount_fen: int | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    assert conn.is_in_transaction(), "an instruction is written with its business change"
    await conn.execute(
        """INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, amount_fen, payload)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb)""",
        outbox_id,
        customer_id,
        kind,
        ref_id,
        amount_fen,
        msgspec.json.encode(payload or {}).decode(),
    )


class Instruction(msgspec.Struct, frozen=True):
    """One outbox row to write (`enqueue_many`)."""

    outbox_id: int
    customer_id: int
    kind: str
    ref_id: int
    payload: dict[str, Any]


async def enqueue_many(conn: asyncpg.Connection, rows: list[Instruction]) -> None:
    """`enqueue` for many rows (no amounts: notifications), in one statement."""
    assert conn.is_in_transaction(), "an instruction is written with its business change"
    if not rows:
        return
    await conn.execute(
        """INSERT INTO outbox (outbox_id, customer_id, kind, ref_id, payload)
           SELECT r.outbox_id, r.customer_id, r.kind, r.ref_id, r.payload::jsonb
           FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[])
                AS r(outbox_id, customer_id, kind, ref_id, payload)""",
        [r.outbox_id for r in rows],
        [r.customer_id for r in rows],
        [r.kind for r in rows],
        [r.ref_id for r in rows],
        [msgspec.json.encode(r.payload).decode() for r in rows],
    )


# The lanes of ledger 0025: the day-end's rows, and everything else.
LANES: Final = ("online", "batch")
# A session writing this start-up parameter writes its outbox rows in that lane.
LANE_SETTING: Final = "engine.outbox_lane"


async def claim(
    conn: asyncpg.Connection, batch_max: int, lease_s: float, lanes: Sequence[str] = LANES
) -> list[Claimed]:
    rows = await conn.fetch(_CLAIM_SQL, batch_max, lease_s, list(lanes))
    return [_claimed(row) for row in rows]


async def claim_one(
    conn: asyncpg.Connection, ref_id: int, kind: str, lease_s: float
) -> Claimed | None:
    """Claim the pending row of one business change (a repayment's inline debit);
    None if a relay took it first."""
    row = await conn.fetchrow(_CLAIM_ONE_SQL, ref_id, kind, lease_s)
    return None if row is None else _claimed(row)


async def claim_one_with(
    conn: asyncpg.Connection, ref_id: int, kind: str, lease_s: float, extra_sql: str
) -> tuple[Claimed, asyncpg.Record] | None:
    """`claim_one`, and in the same statement `extra_sql` (a SELECT list over the
    claimed row `c`, e.g. a subquery for the card it debits): the claim and the record."""
    row = await conn.fetchrow(
        f"WITH c AS ({_CLAIM_ONE_SQL}) SELECT c.*, {extra_sql} FROM c", ref_id, kind, lease_s
    )
    return None if row is None else (_claimed(row), row)


async def finish(conn: asyncpg.Connection, claimed: Claimed, state: str, outcome: str) -> None:
    """Close the row — only under the claim that was handed out: a relay whose lease
    ran out (and whose row another relay took) changes nothing."""
    assert state in ("done", "failed"), state
    await conn.execute(
        """UPDATE outbox SET state = $3, outcome = $4, done_at = now(), lease_until = NULL
           WHERE outbox_id = $1 AND attempts = $2 AND state IN ('sending', 'unknown')""",
        claimed.outbox_id,
        claimed.attempts,
        state,
        outcome,
    )


async def finish_many(conn: asyncpg.Connection, claims: list[Claimed], outcome: str) -> None:
    """`finish` as `done` for many rows in one statement, each under its own claim."""
    await conn.execute(
        """UPDATE outbox o SET state = 'done', outcome = $3, done_at = now(), lease_until = NULL
           FROM unnest($1::bigint[], $2::integer[]) AS c(outbox_id, attempts)
           WHERE o.outbox_id = c.outbox_id AND o.attempts = c.attempts
             AND o.state IN ('sending', 'unknown')""",
        [c.outbox_id for c in claims],
        [c.attempts for c in claims],
        outcome,
    )


async def defer(
    conn: asyncpg.Connection, claimed: Claimed, state: str, delay_s: float, error: str | None
) -> None:
    """Try again later: `pending` (it never reached the other side) or `unknown` (ask
    first); only under the claim that was handed out, like `finish`."""
    assert state in ("pending", "unknown"), state
    await conn.execute(
        """UPDATE outbox SET state = $3, lease_until = NULL, last_error = $5,
               next_attempt_at = now() + make_interval(secs => $4)
           WHERE outbox_id = $1 AND attempts = $2 AND state IN ('sending', 'unknown')""",
        claimed.outbox_id,
        claimed.attempts,
        state,
        delay_s,
        error,
    )


async def mark_sent(conn: asyncpg.Connection, claimed: Claimed) -> None:
    """The moment the call to the other side starts: what "long after the send" counts from."""
    await conn.execute(
        "UPDATE outbox SET last_sent_at = now() WHERE outbox_id = $1 AND attempts = $2",
        claimed.outbox_id,
        claimed.attempts,
    )


async def pending_stats(conn: asyncpg.Connection) -> list[tuple[str, int, float]]:
    """(kind, rows not finished, age in seconds of the oldest) for the SRE gauges."""
    rows = await conn.fetch(
        """SELECT kind, count(*) AS n,
                  coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
           FROM outbox WHERE done_at IS NULL GROUP BY kind"""
    )
    return [(row["kind"], int(row["n"]), float(row["age"])) for row in rows]

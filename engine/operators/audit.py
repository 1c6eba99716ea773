"""The audit trail: every operator action and admin change, refused ones too, in the
control database's append-only `audit_log`, hash-chained like the contracts' evidence.

    entry k:  seq, at, operator, tenant, action, target, before, after, outcome, code,
              request_id, prev_hash (entry k-1's hash, GENESIS for the first), hash

    hash = evidence.chain_entry(prev_hash, seq, content_sha256, at, 0, kind="audit")
    content_sha256 = SHA-256 of the canonical JSON (keys sorted, msgspec) of everything
                     but seq, at and the hashes

so the chain's hashing, and its verification (`evidence.verify_chain`: a changed entry,
a broken link, a gap), are the evidence chain's own, not a second copy. Appends take
one advisory lock held to the commit: entries are written one transaction at a time,
seq has no gaps and the chain never forks. Passwords, tokens and secrets never reach an
entry; ID numbers and phones are not put in one either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Final, Literal

import asyncpg
import msgspec

from engine.operators.principal import Principal
from engine.origination import evidence
from engine.stores.shards import acquire

AUDIT_LOCK_KEY: Final = 0x61756469  # "audi": one chain, appended under this lock
KIND: Final = "audit"
TARGET_CHARS_MAX: Final = 200
VERIFY_PAGE: Final = 5000

_canonical = msgspec.json.Encoder(order="sorted")


class AuditEvent(msgspec.Struct, frozen=True):
    operator_id: str
    operator_login: str
    tenant_id: str
    action: str
    target: str
    before: Any = None
    after: Any = None
    outcome: Literal["ok", "refused"] = "ok"
    code: str = ""
    request_id: str = ""


def event(
    who: Principal | None,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    code: str = "",
    request_id: str = "",
    login: str = "",
) -> AuditEvent:
    """An entry by `who` (None: nobody authenticated; `login` as typed, if any)."""
    return AuditEvent(
        operator_id=who.operator_id if who else "",
        operator_login=(who.login if who else login)[:64],
        tenant_id=who.tenant_id if who else "",
        action=action[:64],
        target=target[:TARGET_CHARS_MAX],
        before=before,
        after=after,
        outcome="refused" if code else "ok",
        code=code[:64],
        request_id=request_id[:64],
    )


def content_sha256(e: AuditEvent) -> bytes:
    return hashlib.sha256(_canonical.encode(e)).digest()


def _json(value: Any) -> str | None:
    return None if value is None else _canonical.encode(value).decode()


async def append(conn: asyncpg.Connection, e: AuditEvent) -> int:
    """Append `e` inside the caller's transaction (the change it records commits with it);
    returns its seq."""
    assert conn.is_in_transaction(), "the audit lock is held to the commit"
    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_KEY)
    last = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (0, evidence.GENESIS) if last is None else (last["seq"], bytes(last["hash"]))
    seq += 1
    at: dt.datetime = await conn.fetchval("SELECT now()")
    entry_hash = evidence.chain_entry(
        prev_hash, seq, content_sha256(e), evidence.signed_at_iso(at), 0, kind=KIND
    )
    await conn.execute(
        """INSERT INTO audit_log (seq, at, operator_id, operator_login, tenant_id, action,
               target, before, after, outcome, code, request_id, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11, $12, $13, $14)""",
        seq, at, e.operator_id, e.operator_login, e.tenant_id, e.action, e.target,
        _json(e.before), _json(e.after), e.outcome, e.code, e.request_id, prev_hash, entry_hash,
    )  # fmt: skip
    return seq


async def append_alone(pool: asyncpg.Pool | asyncpg.Connection, e: AuditEvent) -> int:
    """Append `e` in a transaction of its own: a refusal, or the outcome of a change made
    in a shard (the control database cannot share the shard's transaction)."""
    if isinstance(pool, asyncpg.Connection):
        async with pool.transaction():
            return await append(pool, e)
    async with acquire(pool) as conn, conn.transaction():
        return await append(conn, e)


def _loaded(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def event_of(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        operator_id=row["operator_id"],
        operator_login=row["operator_login"],
        tenant_id=row["tenant_id"],
        action=row["action"],
        target=row["target"],
        before=_loaded(row["before"]),
        after=_loaded(row["after"]),
        outcome=row["outcome"],
        code=row["code"],
        request_id=row["request_id"],
    )


def _entry_of(row: asyncpg.Record) -> evidence.EvidenceEntry:
    try:
        digest = content_sha256(event_of(row))
    except (ValueError, msgspec.ValidationError):  # a field made unreadable: changed
        digest = bytes(32)
    return evidence.EvidenceEntry(
        seq=row["seq"],
        contract_id=0,
        kind=KIND,
        document_sha256=digest,
        signed_at_iso=evidence.signed_at_iso(row["at"]),
        prev_hash=bytes(row["prev_hash"]),
        entry_hash=bytes(row["hash"]),
    )


class Verified(msgspec.Struct, frozen=True):
    entries: int
    problems: list[evidence.Problem]


async def verify(conn: asyncpg.Connection) -> Verified:
    """Walk the whole chain in pages; every problem found (empty: intact)."""
    problems: list[evidence.Problem] = []
    next_seq, prev_hash, count = 1, evidence.GENESIS, 0
    while True:
        rows = await conn.fetch(
            "SELECT * FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2", next_seq, VERIFY_PAGE
        )
        if not rows:
            break
        entries = [_entry_of(row) for row in rows]
        problems += evidence.verify_chain(entries, start_seq=next_seq, start_prev_hash=prev_hash)
        count += len(entries)
        next_seq, prev_hash = entries[-1].seq + 1, entries[-1].entry_hash
    return Verified(count, problems)


async def page(
    conn: asyncpg.Connection,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    operator: str | None,
    action: str | None,
    tenant: str | None,
    after_seq: int,
    limit: int,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT * FROM audit_log
               WHERE seq > $1 AND ($2::timestamptz IS NULL OR at >= $2)
                 AND ($3::timestamptz IS NULL OR at < $3)
                 AND ($4::text IS NULL OR operator_id = $4 OR operator_login = $4)
                 AND ($5::text IS NULL OR action = $5)
                 AND ($7::text IS NULL OR tenant_id = $7)
               ORDER BY seq LIMIT $6""",
            after_seq,
            since,
            until,
            operator,
            action,
            limit,
            tenant,
        )
    )

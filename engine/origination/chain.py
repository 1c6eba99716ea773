"""Appending to the shard's evidence hash chain, and evidence documents of their own.

    append(links)  under the shard's chain lock (held to the commit, so entries are
                   written one transaction at a time and seq has no gaps):
                   entry_hash = chain_entry(prev_hash, seq, document_sha256, at, subject, kind)
    record(kind, document)   evidence_record (append-only) + its chain entry: consent,
                   face-to-face and signature records (`evidence_entry.contract_id` then
                   holds the subject, an application or a contract)

The hashing is `engine.origination.evidence`'s; `contracts.verify_shard` walks it back.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import asyncpg
import msgspec

from engine.origination import evidence

CHAIN_LOCK_KEY: Final = 0x65766964  # "evid": one chain per shard, appended under this lock
RecordKind = Literal["credit_query_consent", "face_to_face", "signature"]


class Link(msgspec.Struct, frozen=True):
    """What one entry evidences: a document's digest, of a subject, of a kind."""

    subject_id: int
    kind: str
    document_sha256: bytes


class Appended(msgspec.Struct, frozen=True):
    seq: int
    prev_hash: bytes
    entry_hash: bytes


async def evidence_time(conn: asyncpg.Connection) -> dt.datetime:
    """The transaction's time to the millisecond: what entries of this commit carry."""
    moment: dt.datetime = await conn.fetchval("SELECT date_trunc('milliseconds', now())")
    return moment


async def append(conn: asyncpg.Connection, links: list[Link], at: dt.datetime) -> list[Appended]:
    """Chain entries for `links`, in order, inside the caller's transaction."""
    assert conn.is_in_transaction(), "the chain lock is held to the commit"
    assert links
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK_KEY)
    last = await conn.fetchrow(
        "SELECT seq, entry_hash FROM evidence_entry ORDER BY seq DESC LIMIT 1"
    )
    seq, prev_hash = (
        (0, evidence.GENESIS) if last is None else (last["seq"], bytes(last["entry_hash"]))
    )
    at_iso = evidence.signed_at_iso(at)
    appended = []
    for link in links:
        seq += 1
        entry_hash = evidence.chain_entry(
            prev_hash, seq, link.document_sha256, at_iso, link.subject_id, kind=link.kind
        )
        await conn.execute(
            """INSERT INTO evidence_entry (seq, contract_id, kind, document_sha256, signed_at,
                   prev_hash, entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            seq,
            link.subject_id,
            link.kind,
            link.document_sha256,
            at,
            prev_hash,
            entry_hash,
        )
        appended.append(Appended(seq, prev_hash, entry_hash))
        prev_hash = entry_hash
    return appended


async def record(
    conn: asyncpg.Connection, *, subject_id: int, kind: RecordKind, document: str, at: dt.datetime
) -> Appended:
    """Keep `document` as evidence of `subject_id` and chain its digest."""
    digest = evidence.document_sha256(document)
    [entry] = await append(conn, [Link(subject_id, kind, digest)], at)
    await conn.execute(
        """INSERT INTO evidence_record (evidence_seq, subject_id, kind, document,
               document_sha256, recorded_at) VALUES ($1, $2, $3, $4, $5, $6)""",
        entry.seq,
        subject_id,
        kind,
        document,
        digest,
        at,
    )
    return entry

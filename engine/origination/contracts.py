"""E-contracts: rendered at approval, signed by the customer, evidenced in a hash chain.

    approve ─► contract rows (loan contract + credit authorization), unsigned
    sign    ─► per document, under the shard's chain lock:
               entry_hash = H(prev_hash, seq, document_sha256, signed_at, contract_id)
               evidence_entry (append-only) ─► contract.signed_at, evidence_seq
               ─► credit_line.contract_signed_at (drawdowns allowed from here on)

`python -m engine evidence verify` re-walks every chain and re-hashes every
signed document (`verify_shard`).
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from engine.contract.errors import NotFound, Unprocessable
from engine.contract.messages import ContractSigned
from engine.origination import evidence
from engine.stores.reference import Channel

KINDS = ("loan_contract", "credit_authorization")
_CHAIN_LOCK_KEY = 0x65766964  # "evid": one chain per shard, appended under this lock


class ContractDocument(msgspec.Struct, frozen=True):
    kind: str
    text: str


async def create_contracts(
    conn: asyncpg.Connection,
    *,
    contract_id: int,
    customer_id: int,
    application_id: int,
    credit_line_id: int,
    documents: list[ContractDocument],
) -> None:
    await conn.executemany(
        """INSERT INTO contract (contract_id, kind, customer_id, application_id, credit_line_id,
               document, document_sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [
            (
                contract_id,
                d.kind,
                customer_id,
                application_id,
                credit_line_id,
                d.text,
                evidence.document_sha256(d.text),
            )
            for d in documents
        ],
    )


async def sign(
    conn: asyncpg.Connection, channel: Channel, contract_id: int, confirmed: bool
) -> ContractSigned:
    if not confirmed:
        raise Unprocessable("CONFIRMATION_REQUIRED", "the customer must confirm the contract")
    rows = await conn.fetch(
        """SELECT c.*, a.tenant_id FROM contract c JOIN application a USING (application_id)
           WHERE c.contract_id = $1 ORDER BY c.kind FOR UPDATE OF c""",
        contract_id,
    )
    if not rows or rows[0]["tenant_id"] != channel.tenant_id:
        raise NotFound("CONTRACT_NOT_FOUND", f"no contract {contract_id}")
    by_kind = {row["kind"]: row for row in rows}
    main = by_kind["loan_contract"]
    if main["signed_at"] is not None:  # signed before: the same answer again
        return _signed_view(
            contract_id, main["signed_at"], main["document_sha256"], main["evidence_seq"]
        )
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK_KEY)
    last = await conn.fetchrow(
        "SELECT seq, entry_hash FROM evidence_entry ORDER BY seq DESC LIMIT 1"
    )
    seq, prev_hash = (
        (0, evidence.GENESIS) if last is None else (last["seq"], bytes(last["entry_hash"]))
    )
    signed_at = await conn.fetchval("SELECT date_trunc('milliseconds', now())")
    main_seq = 0
    for kind in KINDS:
        row = by_kind[kind]
        seq += 1
        entry_hash = evidence.chain_entry(
            prev_hash,
            seq,
            bytes(row["document_sha256"]),
            evidence.signed_at_iso(signed_at),
            contract_id,
            kind=kind,
        )
        await conn.execute(
            """INSERT INTO evidence_entry (seq, contract_id, kind, document_sha256, signed_at,
                   prev_hash, entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            seq,
            contract_id,
            kind,
            row["document_sha256"],
            signed_at,
            prev_hash,
            entry_hash,
        )
        await conn.execute(
            """UPDATE contract SET signed_at = $3, evidence_seq = $4
               WHERE contract_id = $1 AND kind = $2""",
            contract_id,
            kind,
            signed_at,
            seq,
        )
        prev_hash = entry_hash
        if kind == "loan_contract":
            main_seq = seq
    await conn.execute(
        """UPDATE credit_line SET contract_signed_at = $2, updated_at = now()
           WHERE credit_line_id = $1""",
        main["credit_line_id"],
        signed_at,
    )
    await conn.execute(
        """UPDATE application SET updated_at = now(),
               steps = steps || jsonb_build_array(
                   jsonb_build_object('step', 'contract_signed', 'at', $2::text))
           WHERE application_id = $1""",
        main["application_id"],
        signed_at.isoformat(),
    )
    return _signed_view(contract_id, signed_at, main["document_sha256"], main_seq)


def _signed_view(
    contract_id: int, signed_at: dt.datetime, digest: bytes, seq: int
) -> ContractSigned:
    return ContractSigned(str(contract_id), signed_at, bytes(digest).hex(), seq)


async def verify_shard(conn: asyncpg.Connection) -> list[str]:
    """Every problem of this shard's chain and signed documents (empty: intact)."""
    entries = [
        evidence.EvidenceEntry(
            seq=row["seq"],
            contract_id=row["contract_id"],
            kind=row["kind"],
            document_sha256=bytes(row["document_sha256"]),
            signed_at_iso=evidence.signed_at_iso(row["signed_at"]),
            prev_hash=bytes(row["prev_hash"]),
            entry_hash=bytes(row["entry_hash"]),
        )
        for row in await conn.fetch("SELECT * FROM evidence_entry ORDER BY seq")
    ]
    problems = [str(problem) for problem in evidence.verify_chain(entries)]
    by_seq = {entry.seq: entry for entry in entries}
    for row in await conn.fetch(
        "SELECT * FROM contract WHERE signed_at IS NOT NULL ORDER BY contract_id"
    ):
        digest = evidence.document_sha256(row["document"])
        entry = by_seq.get(row["evidence_seq"])
        if digest != bytes(row["document_sha256"]):
            problems.append(
                f"contract {row['contract_id']} {row['kind']}: document changed after signing"
            )
        if entry is None or entry.document_sha256 != digest:
            problems.append(
                f"contract {row['contract_id']} {row['kind']}: evidence entry missing or differs"
            )
    return problems

"""E-contracts: rendered at approval, signed by the customer, evidenced in a hash chain.

    approve ─► contract rows (loan contract + credit authorization), unsigned
               [─► contract_face_to_face: the rule set asked for 面签 first]
    sign    ─► `engine.origination.signing`: each document's digest into the chain,
               a signature record, credit_line.contract_signed_at (drawdowns from then)

`python -m engine evidence verify` re-walks every chain and re-hashes every
signed document and every evidence record (`verify_shard`).
"""

from __future__ import annotations

import asyncpg
import msgspec

from engine.contract.errors import NotFound
from engine.origination import evidence

KINDS = ("loan_contract", "credit_authorization")


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


async def contract_rows(
    conn: asyncpg.Connection, contract_id: int, tenant_id: str | None, *, lock: bool = False
) -> dict[str, asyncpg.Record]:
    """The contract's documents by kind, with the application's tenant; 404 when there is
    none, or it belongs to another tenant (`tenant_id` None: an operator, any tenant)."""
    rows = await conn.fetch(
        """SELECT c.*, a.tenant_id, a.channel_id, a.created_at AS application_created_at
           FROM contract c JOIN application a USING (application_id)
           WHERE c.contract_id = $1 ORDER BY c.kind"""
        + (" FOR UPDATE OF c" if lock else ""),
        contract_id,
    )
    if not rows or (tenant_id is not None and rows[0]["tenant_id"] != tenant_id):
        raise NotFound("CONTRACT_NOT_FOUND", f"no contract {contract_id}")
    by_kind = {row["kind"]: row for row in rows}
    assert set(by_kind) == set(KINDS), (contract_id, set(by_kind))
    return by_kind


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
        what = f"contract {row['contract_id']} {row['kind']}"
        problems += _document_problems(what, row["document"], row, by_seq.get(row["evidence_seq"]))
    for row in await conn.fetch("SELECT * FROM evidence_record ORDER BY evidence_seq"):
        what = f"{row['kind']} record of {row['subject_id']}"
        problems += _document_problems(what, row["document"], row, by_seq.get(row["evidence_seq"]))
    return problems


def _document_problems(
    what: str, text: str, row: asyncpg.Record, entry: evidence.EvidenceEntry | None
) -> list[str]:
    """A kept document against its stored digest and its chain entry."""
    digest = evidence.document_sha256(text)
    problems = []
    if digest != bytes(row["document_sha256"]):
        problems.append(f"{what}: document changed after it was evidenced")
    if entry is None or entry.document_sha256 != digest:
        problems.append(f"{what}: evidence entry missing or differs")
    return problems

"""Reading a contract back: its documents, their digests and places in the hash chain, and
the evidence kept about it (the applicant's consent, the face-to-face meeting, the
signature) — for the channel (its own tenant's contracts) and for operators (any)."""

from __future__ import annotations

import asyncpg

from engine.contract.messages import (
    ChainPlace,
    ContractDocumentView,
    ContractView,
    EvidenceRecordView,
)
from engine.origination import face_to_face
from engine.origination.contracts import KINDS, contract_rows


async def contract_view(
    conn: asyncpg.Connection, contract_id: int, tenant_id: str | None
) -> ContractView:
    """`tenant_id` None: an operator's read (any tenant); else 404 for another tenant's."""
    documents = await contract_rows(conn, contract_id, tenant_id)
    main = documents["loan_contract"]
    places = await _places(conn, [row["evidence_seq"] for row in documents.values()])
    records = await conn.fetch(
        """SELECT r.*, e.prev_hash, e.entry_hash FROM evidence_record r
           JOIN evidence_entry e ON e.seq = r.evidence_seq
           WHERE r.subject_id = ANY($1::bigint[]) ORDER BY r.evidence_seq""",
        [contract_id, main["application_id"]],
    )
    meeting = await face_to_face.state(conn, contract_id)
    if main["signed_at"] is not None:
        status = "signed"
    elif meeting.required and meeting.met_at is None:
        status = "awaiting_face_to_face"
    else:
        status = "awaiting_signature"
    return ContractView(
        contract_id=str(contract_id),
        application_id=str(main["application_id"]),
        customer_id=str(main["customer_id"]),
        credit_line_id=str(main["credit_line_id"]),
        status=status,  # type: ignore[arg-type]
        signed_at=main["signed_at"],
        face_to_face=meeting,
        documents=[
            ContractDocumentView(
                kind=kind,
                text=documents[kind]["document"],
                document_sha256=bytes(documents[kind]["document_sha256"]).hex(),
                chain=places.get(documents[kind]["evidence_seq"]),
            )
            for kind in KINDS
        ],
        evidence=[
            EvidenceRecordView(
                kind=row["kind"],
                subject_id=str(row["subject_id"]),
                document=row["document"],
                document_sha256=bytes(row["document_sha256"]).hex(),
                chain=ChainPlace(
                    row["evidence_seq"],
                    bytes(row["prev_hash"]).hex(),
                    bytes(row["entry_hash"]).hex(),
                    row["recorded_at"],
                ),
            )
            for row in records
        ],
    )


async def _places(conn: asyncpg.Connection, seqs: list[int | None]) -> dict[int, ChainPlace]:
    wanted = [seq for seq in seqs if seq is not None]
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT seq, prev_hash, entry_hash, signed_at FROM evidence_entry WHERE seq = ANY($1)",
        wanted,
    )
    return {
        row["seq"]: ChainPlace(
            row["seq"],
            bytes(row["prev_hash"]).hex(),
            bytes(row["entry_hash"]).hex(),
            row["signed_at"],
        )
        for row in rows
    }

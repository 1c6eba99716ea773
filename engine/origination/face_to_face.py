"""Face-to-face signing (面签): the rule set marks an approval, an officer records the meeting.

decide ─► Decision.face_to_face (codes of the rules with action "face_to_face" hit)
approve ─► contract_face_to_face (contract, reasons), nothing met yet
POST /v1/contracts/{id}/face-to-face (operators) ─► officer, place, time kept as an
       evidence record in the hash chain ─► the contract may now be signed online
signing and its code (`engine.origination.signing`) ─► 422 FACE_TO_FACE_REQUIRED before
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import asyncpg

from engine.contract.errors import Conflict, Unprocessable
from engine.contract.messages import FaceToFaceCreate, FaceToFaceView
from engine.origination import chain
from engine.origination.contracts import contract_rows

CLOCK_SKEW: Final = dt.timedelta(minutes=5)  # an officer's tablet clock may run ahead

RECORD_TEMPLATE: Final = """\
面签记录
合同编号：{contract_id}
申请编号：{application_id}
面签人员：{officer}
面签地点：{place}
面签时间：{met_at}
记录时间：{recorded_at}
面签原因：{reasons}
"""


async def require(conn: asyncpg.Connection, contract_id: int, reasons: list[str]) -> None:
    """At approval: this contract is signed only after an officer met the customer."""
    if reasons:
        await conn.execute(
            "INSERT INTO contract_face_to_face (contract_id, reasons) VALUES ($1, $2)",
            contract_id,
            reasons,
        )


async def state(conn: asyncpg.Connection, contract_id: int) -> FaceToFaceView:
    row = await conn.fetchrow(
        "SELECT * FROM contract_face_to_face WHERE contract_id = $1", contract_id
    )
    if row is None:
        return FaceToFaceView(required=False, reasons=[])
    return FaceToFaceView(
        required=True,
        reasons=list(row["reasons"]),
        officer=row["officer"],
        place=row["place"],
        met_at=row["met_at"],
        evidence_seq=row["evidence_seq"],
    )


def check_done(view: FaceToFaceView) -> None:
    """Raise FACE_TO_FACE_REQUIRED if the meeting is required and not recorded."""
    if view.required and view.met_at is None:
        raise Unprocessable(
            "FACE_TO_FACE_REQUIRED",
            "this contract is signed face to face (面签) first: an officer records the "
            "meeting (POST /v1/contracts/{id}/face-to-face), then the customer signs",
        )


async def record(
    conn: asyncpg.Connection,
    contract_id: int,
    body: FaceToFaceCreate,
    tenant_id: str | None = None,
) -> FaceToFaceView:
    """An operator's record of the meeting, inside the caller's transaction (`tenant_id`:
    the operator's member bank, None: the union's, any)."""
    documents = await contract_rows(conn, contract_id, tenant_id, lock=True)
    main = documents["loan_contract"]
    row = await conn.fetchrow(
        "SELECT *, now() AS now FROM contract_face_to_face WHERE contract_id = $1 FOR UPDATE",
        contract_id,
    )
    if row is None:
        raise Unprocessable(
            "FACE_TO_FACE_NOT_REQUIRED", "the rule set did not ask for this contract to be 面签"
        )
    if row["met_at"] is not None:
        raise Conflict(
            "FACE_TO_FACE_RECORDED",
            f"the meeting was recorded already (evidence entry {row['evidence_seq']})",
        )
    if not main["application_created_at"] <= body.met_at <= row["now"] + CLOCK_SKEW:
        raise Unprocessable(
            "FACE_TO_FACE_TIME_INVALID",
            "met_at must lie between the application and now",
        )
    at = await chain.evidence_time(conn)
    document = RECORD_TEMPLATE.format(
        contract_id=contract_id,
        application_id=main["application_id"],
        officer=body.officer,
        place=body.place,
        met_at=body.met_at.isoformat(),
        recorded_at=at.isoformat(),
        reasons="、".join(row["reasons"]),
    )
    entry = await chain.record(
        conn, subject_id=contract_id, kind="face_to_face", document=document, at=at
    )
    await conn.execute(
        """UPDATE contract_face_to_face SET officer = $2, place = $3, met_at = $4,
               recorded_at = $5, evidence_seq = $6 WHERE contract_id = $1""",
        contract_id,
        body.officer,
        body.place,
        body.met_at,
        at,
        entry.seq,
    )
    await conn.execute(
        """UPDATE application SET updated_at = now(),
               steps = steps || jsonb_build_array(
                   jsonb_build_object('step', 'face_to_face', 'at', $2::text))
           WHERE application_id = $1""",
        main["application_id"],
        at.isoformat(),
    )
    return await state(conn, contract_id)

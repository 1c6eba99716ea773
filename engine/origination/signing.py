"""The customer signs the contract online: a one-time code by SMS, then the signature.

    POST /v1/contracts/{id}/otp    signed already ... 422 CONTRACT_ALREADY_SIGNED
                                   面签 pending ..... 422 FACE_TO_FACE_REQUIRED
                                   ─► otp.issue ─► commit ─► SMS to the customer's phone
                                      (the gateway failed: the code is voided, 503)
    POST /v1/contracts/{id}/sign   confirmed, 面签 done, otp.check right
                                   ─► each document's digest into the chain
                                   ─► a signature record (digests, the code's issue and
                                      check, the signer's IP and device) into the chain
                                   ─► credit_line.contract_signed_at: drawdowns allowed

A contract signed before answers its signature again, whatever code is sent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from typing import Final

import asyncpg
import msgspec

from engine.contract.errors import ApiError, BadRequest, Unprocessable
from engine.contract.messages import ContractSign, ContractSigned
from engine.origination import chain, face_to_face, otp
from engine.origination.contracts import KINDS, contract_rows
from engine.security.pii import PiiCipher
from engine.services.customers import PHONE
from engine.services.notify import sms_text
from engine.stores.reference import Channel, ReferenceData

SIGNER_IP_HEADER: Final = "X-Signer-IP"
SIGNER_DEVICE_HEADER: Final = "X-Signer-Device-Id"
_DEVICE_RE: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SIGNATURE_TEMPLATE: Final = """\
电子签名记录
合同编号：{contract_id}
申请编号：{application_id}
借款合同摘要（SHA-256）：{loan_contract_sha256}（证据链序号 {loan_contract_seq}）
征信授权书摘要（SHA-256）：{credit_authorization_sha256}（证据链序号 {credit_authorization_seq}）
签署时间：{signed_at}
签署渠道：{channel_name}（{channel_id}）
短信验证码：{otp_issued_at} 发送至 {phone_masked}，签署时核验通过
签署人 IP：{signer_ip}
签署设备：{device_id}
面签记录：{face_to_face}
"""


class Signer(msgspec.Struct, frozen=True):
    """Who signed, as the channel saw them (from its headers)."""

    ip: str
    device_id: str


def signer_of(headers: Mapping[str, str]) -> Signer:
    """The signer's IP and device from the channel's headers (400 if missing or malformed)."""
    raw_ip = headers.get(SIGNER_IP_HEADER, "").strip()
    try:
        ip = str(ipaddress.ip_address(raw_ip))
    except ValueError:
        raise BadRequest(
            "SIGNER_IP_INVALID", f"{SIGNER_IP_HEADER} must be the signer's IPv4 or IPv6 address"
        ) from None
    device_id = headers.get(SIGNER_DEVICE_HEADER, "")
    if _DEVICE_RE.match(device_id) is None:
        raise BadRequest(
            "SIGNER_DEVICE_ID_INVALID",
            f"{SIGNER_DEVICE_HEADER} must be 1-128 characters of [A-Za-z0-9._:-]",
        )
    return Signer(ip, device_id)


class CodeToSend(msgspec.Struct, frozen=True):
    """An issued code and its SMS, for the caller to send after the commit."""

    issued: otp.Issued
    phone: str
    phone_masked: str
    text: str
    reference: str

    def __repr__(self) -> str:  # the text holds the code: never in a log
        return f"CodeToSend(reference={self.reference!r})"


async def issue_code(
    conn: asyncpg.Connection,
    cipher: PiiCipher,
    reference: ReferenceData,
    *,
    policy: otp.OtpPolicy,
    channel: Channel,
    contract_id: int,
) -> CodeToSend:
    documents = await contract_rows(conn, contract_id, channel.tenant_id, lock=True)
    main = documents["loan_contract"]
    if main["signed_at"] is not None:
        raise Unprocessable("CONTRACT_ALREADY_SIGNED", f"contract {contract_id} is signed")
    face_to_face.check_done(await face_to_face.state(conn, contract_id))
    customer = await conn.fetchrow(
        "SELECT phone_ciphertext, phone_masked FROM customer WHERE customer_id = $1",
        main["customer_id"],
    )
    assert customer is not None
    issued = await otp.issue(conn, cipher, policy, contract_id, customer["phone_masked"])
    text = sms_text(
        reference,
        tenant_id=channel.tenant_id,
        kind="contract_otp",
        fields={
            "channel": reference.channel_name(channel.channel_id),
            "contract_id": str(contract_id),
            "code": issued.code,
            "minutes": str(max(1, policy.ttl_s // 60)),
        },
    )
    return CodeToSend(
        issued,
        cipher.decrypt(bytes(customer["phone_ciphertext"]), context=PHONE, row=main["customer_id"]),
        customer["phone_masked"],
        text,
        f"O{contract_id}-{issued.issue_no}",
    )


async def sign(
    conn: asyncpg.Connection,
    cipher: PiiCipher,
    reference: ReferenceData,
    *,
    policy: otp.OtpPolicy,
    channel: Channel,
    contract_id: int,
    body: ContractSign,
    signer: Signer,
) -> ContractSigned | ApiError:
    """Sign, or the refusal of a wrong code: returned, not raised, because the caller
    must commit the count of wrong codes before answering it."""
    if not body.confirmed:
        raise Unprocessable("CONFIRMATION_REQUIRED", "the customer must confirm the contract")
    documents = await contract_rows(conn, contract_id, channel.tenant_id, lock=True)
    main = documents["loan_contract"]
    if main["signed_at"] is not None:  # signed before: the same answer again
        return await _signed_view(conn, main)
    meeting = await face_to_face.state(conn, contract_id)
    face_to_face.check_done(meeting)
    checked = await otp.check(conn, cipher, policy, contract_id, body.otp)
    if checked.verdict is not otp.Verdict.OK:
        return otp.refusal(checked)
    assert checked.issued_at is not None
    at = await chain.evidence_time(conn)
    links = [
        chain.Link(contract_id, kind, bytes(documents[kind]["document_sha256"])) for kind in KINDS
    ]
    appended = dict(zip(KINDS, await chain.append(conn, links, at), strict=True))
    for kind in KINDS:
        await conn.execute(
            """UPDATE contract SET signed_at = $3, evidence_seq = $4
               WHERE contract_id = $1 AND kind = $2""",
            contract_id,
            kind,
            at,
            appended[kind].seq,
        )
    phone_masked = await conn.fetchval(
        "SELECT phone_masked FROM contract_otp WHERE contract_id = $1", contract_id
    )
    record = SIGNATURE_TEMPLATE.format(
        contract_id=contract_id,
        application_id=main["application_id"],
        loan_contract_sha256=bytes(documents["loan_contract"]["document_sha256"]).hex(),
        loan_contract_seq=appended["loan_contract"].seq,
        credit_authorization_sha256=bytes(
            documents["credit_authorization"]["document_sha256"]
        ).hex(),
        credit_authorization_seq=appended["credit_authorization"].seq,
        signed_at=at.isoformat(),
        channel_name=reference.channel_name(channel.channel_id),
        channel_id=channel.channel_id,
        otp_issued_at=checked.issued_at.isoformat(),
        phone_masked=phone_masked,
        signer_ip=signer.ip,
        device_id=signer.device_id,
        face_to_face="无需面签"
        if not meeting.required
        else f"{meeting.officer}，{meeting.place}，证据链序号 {meeting.evidence_seq}",
    )
    signature = await chain.record(
        conn, subject_id=contract_id, kind="signature", document=record, at=at
    )
    await _mark_signed(conn, main, at)
    return ContractSigned(
        str(contract_id),
        at,
        bytes(main["document_sha256"]).hex(),
        appended["loan_contract"].seq,
        signature.seq,
    )


async def _mark_signed(conn: asyncpg.Connection, main: asyncpg.Record, at: dt.datetime) -> None:
    """Drawdowns on the line are allowed from now; the application's journey goes on."""
    await conn.execute(
        """UPDATE credit_line SET contract_signed_at = $2, updated_at = now()
           WHERE credit_line_id = $1""",
        main["credit_line_id"],
        at,
    )
    await conn.execute(
        """UPDATE application SET updated_at = now(),
               steps = steps || jsonb_build_array(
                   jsonb_build_object('step', 'contract_signed', 'at', $2::text))
           WHERE application_id = $1""",
        main["application_id"],
        at.isoformat(),
    )


async def _signed_view(conn: asyncpg.Connection, main: asyncpg.Record) -> ContractSigned:
    signature_seq = await conn.fetchval(
        """SELECT evidence_seq FROM evidence_record
           WHERE subject_id = $1 AND kind = 'signature'""",
        main["contract_id"],
    )
    return ContractSigned(
        str(main["contract_id"]),
        main["signed_at"],
        bytes(main["document_sha256"]).hex(),
        main["evidence_seq"],
        signature_seq,
    )

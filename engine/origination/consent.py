"""The applicant's authorization of the credit-bureau query, evidenced before the query.

    application needs the bureau ─► consent record (what, when, which channel, a digest of
    the authorization text shown) ─► evidence_record + chain entry, same transaction as
    the `bureau` outbox row ─► only then can anything query the bureau

The text shown is the channel's (`consent.text_sha256`) or, when the channel sends no
digest, the engine's own rendering of the credit-query authorization for this applicant,
whose digest is recorded instead. The consent time is the channel's
(`consent.consented_at`, within a day before the request) or the request's own.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import asyncpg
import msgspec

from engine.contract.errors import BadRequest
from engine.contract.messages import Consent
from engine.origination import chain, evidence
from engine.security.identity import mask_id_number
from engine.services.customers import mask_name

CONSENT_AGE_MAX: Final = dt.timedelta(days=1)
CLOCK_SKEW: Final = dt.timedelta(minutes=5)
PURPOSE: Final = "贷款审批（loan_approval）"

RECORD_TEMPLATE: Final = """\
征信查询授权记录
申请编号：{application_id}
授权人：{name_masked}（证件号码：{id_number_masked}）
被授权机构：{tenant_id}
授权事项：查询本人信用报告，用途：{purpose}，产品：{product_name}
授权渠道：{channel_name}（{channel_id}）
授权条款版本：{terms_version}
授权时间：{consented_at}
展示的授权文本摘要（SHA-256）：{shown_sha256}
摘要来源：{shown_source}
记录时间：{recorded_at}
"""


class ConsentFacts(msgspec.Struct, frozen=True):
    application_id: int
    tenant_id: str
    product_name: str
    channel_id: str
    channel_name: str
    applicant_name: str
    id_number: str


def check_consent_time(consent: Consent, now: dt.datetime) -> None:
    """400 CONSENT_TIME_INVALID unless the channel's consent time is plausible."""
    at = consent.consented_at
    if at is not None and not now - CONSENT_AGE_MAX <= at <= now + CLOCK_SKEW:
        raise BadRequest(
            "CONSENT_TIME_INVALID",
            "consent.consented_at must be within the day before the request",
        )


def standard_text(facts: ConsentFacts, today: dt.date) -> str:
    """The engine's credit-query authorization for this applicant (shown when the channel
    has no text of its own)."""
    fields = {
        "contract_id": str(facts.application_id),
        "tenant_name": facts.tenant_id,
        "name_masked": mask_name(facts.applicant_name),
        "id_number_masked": mask_id_number(facts.id_number),
        "product_name": facts.product_name,
        "date": today.isoformat(),
    }
    return evidence.render_contract(evidence.CREDIT_AUTHORIZATION_TEMPLATE, fields)


async def record(
    conn: asyncpg.Connection, facts: ConsentFacts, consent: Consent, today: dt.date
) -> chain.Appended:
    """Evidence the authorization in the caller's transaction (before any query)."""
    at = await chain.evidence_time(conn)
    if consent.text_sha256 is not None:
        shown_sha256, source = consent.text_sha256, "渠道提供（channel）"
    else:
        shown_sha256 = evidence.document_sha256(standard_text(facts, today)).hex()
        source = "引擎标准授权书（engine standard text）"
    document = RECORD_TEMPLATE.format(
        application_id=facts.application_id,
        name_masked=mask_name(facts.applicant_name),
        id_number_masked=mask_id_number(facts.id_number),
        tenant_id=facts.tenant_id,
        purpose=PURPOSE,
        product_name=facts.product_name,
        channel_name=facts.channel_name,
        channel_id=facts.channel_id,
        terms_version=consent.terms_version,
        consented_at=(consent.consented_at or at).isoformat(),
        shown_sha256=shown_sha256,
        shown_source=source,
        recorded_at=at.isoformat(),
    )
    entry = await chain.record(
        conn,
        subject_id=facts.application_id,
        kind="credit_query_consent",
        document=document,
        at=at,
    )
    await conn.execute(
        """UPDATE application SET steps = steps || jsonb_build_array(
               jsonb_build_object('step', 'consent_recorded', 'at', $2::text))
           WHERE application_id = $1""",
        facts.application_id,
        at.isoformat(),
    )
    return entry

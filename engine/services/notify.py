"""Customer SMS, queued in the outbox with the change they tell of.

The text is rendered when queued, from the tenant's template, and holds no
full number (the card appears as its last four digits). The phone is read and
decrypted by the relay only when it sends.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec

from engine.stores.outbox import Instruction
from engine.stores.reference import ReferenceData
from sharding.ids import IdGenerator, shard_of_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
SMS_TEXT_CHARS_MAX = 500


def local_time() -> str:
    return dt.datetime.now(SHANGHAI).strftime("%m月%d日%H:%M")


def sms_text(reference: ReferenceData, *, tenant_id: str, kind: str, fields: dict[str, str]) -> str:
    """The tenant's template for `kind`, filled in (no full number in any field)."""
    text = reference.sms_template(tenant_id, kind).format(time=local_time(), **fields)
    assert len(text) <= SMS_TEXT_CHARS_MAX, len(text)
    return text


def sms_payload(kind: str, text: str) -> str:
    """The outbox payload of an SMS, as JSON."""
    return msgspec.json.encode({"kind": kind, "text": text}).decode()


def sms_instruction(
    ids: IdGenerator,
    reference: ReferenceData,
    *,
    tenant_id: str,
    customer_id: int,
    ref_id: int,
    kind: str,
    fields: dict[str, str],
) -> Instruction:
    """The outbox row of one SMS, its text rendered from the bank's template."""
    text = sms_text(reference, tenant_id=tenant_id, kind=kind, fields=fields)
    return Instruction(
        outbox_id=ids.next_id(shard_of_id(customer_id)),
        customer_id=customer_id,
        kind="sms",
        ref_id=ref_id,
        payload={"kind": kind, "text": text},
    )

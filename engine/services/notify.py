"""Customer SMS, queued in the outbox with the change they tell of.

The text is rendered when queued, from the tenant's template, and holds no
full number (the card appears as its last four digits). The phone is read and
decrypted by the relay only when it sends.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg

from engine.outbox import enqueue
from engine.reference import ReferenceData
from sharding.ids import IdGenerator, shard_of_id

SHANGHAI = ZoneInfo("Asia/Shanghai")
SMS_TEXT_CHARS_MAX = 500


def local_time() -> str:
    return dt.datetime.now(SHANGHAI).strftime("%m月%d日%H:%M")


async def queue_sms(
    conn: asyncpg.Connection,
    ids: IdGenerator,
    reference: ReferenceData,
    *,
    tenant_id: str,
    customer_id: int,
    ref_id: int,
    kind: str,
    fields: dict[str, str],
) -> None:
    text = reference.sms_template(tenant_id, kind).format(time=local_time(), **fields)
    assert len(text) <= SMS_TEXT_CHARS_MAX, len(text)
    await enqueue(
        conn,
        outbox_id=ids.next_id(shard_of_id(customer_id)),
        customer_id=customer_id,
        kind="sms",
        ref_id=ref_id,
        payload={"kind": kind, "text": text},
    )

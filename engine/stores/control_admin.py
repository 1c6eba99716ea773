"""Writes to the control database made by operators' commands (never by the hot path):
channels and their secrets, the demo data of the local stack, the business clock."""

from __future__ import annotations

import datetime as dt
import secrets

import asyncpg

from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores.reference import CHANNEL_SECRET_CONTEXT

DEMO_TENANT = "demo"
DEMO_CHANNEL = "demo"
DEMO_SECRET = "demo-secret"  # noqa: S105 - the local stack's published demo secret (API.md)
DEMO_CHANNEL_NAME = "演示手机银行"

_PRODUCT_SQL = """
INSERT INTO product (product_code, tenant_id, name, repayment_methods, term_months_min,
    term_months_max, bullet_term_months_max, grace_months_max, line_limit_max_fen,
    customer_cap_group, customer_outstanding_max_fen, annual_rate_pct_min, annual_rate_pct_max,
    penalty_multiplier)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (product_code) DO UPDATE SET name = excluded.name,
    repayment_methods = excluded.repayment_methods, term_months_min = excluded.term_months_min,
    term_months_max = excluded.term_months_max,
    bullet_term_months_max = excluded.bullet_term_months_max,
    grace_months_max = excluded.grace_months_max, line_limit_max_fen = excluded.line_limit_max_fen,
    customer_cap_group = excluded.customer_cap_group,
    customer_outstanding_max_fen = excluded.customer_outstanding_max_fen,
    annual_rate_pct_min = excluded.annual_rate_pct_min,
    annual_rate_pct_max = excluded.annual_rate_pct_max,
    penalty_multiplier = excluded.penalty_multiplier, updated_at = now()
"""

ALL_METHODS = [
    "equal_installment",
    "equal_principal",
    "interest_only",
    "bullet",
    "grace_then_equal_installment",
]


class AdminError(RuntimeError):
    """An operator command that cannot be carried out; the message says why."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


DISPLAY_NAME_CHARS_MAX = 32


def check_display_name(name: str) -> str:
    """The name customers see in their SMS ("农信手机银行"): 1..32 characters, one line,
    no braces (it is filled into SMS templates)."""
    name = name.strip()
    if not 1 <= len(name) <= DISPLAY_NAME_CHARS_MAX or any(c in name for c in "{}\n"):
        raise AdminError(f"a display name is 1..{DISPLAY_NAME_CHARS_MAX} characters, no braces")
    return name


async def add_channel(
    conn: asyncpg.Connection,
    cipher: PiiCipher,
    channel_id: str,
    tenant_id: str,
    secret: str,
    *,
    display_name: str | None = None,
) -> None:
    if await conn.fetchval("SELECT 1 FROM tenant WHERE tenant_id = $1", tenant_id) is None:
        raise AdminError(f"no tenant {tenant_id!r}")
    done = await conn.fetchval(
        """INSERT INTO channel (channel_id, tenant_id, secret_ciphertext, display_name)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (channel_id) DO NOTHING RETURNING 1""",
        channel_id,
        tenant_id,
        cipher.encrypt(secret, context=CHANNEL_SECRET_CONTEXT, row=channel_id),
        check_display_name(display_name or channel_id),
    )
    if done is None:
        raise AdminError(f"channel {channel_id!r} exists; use rotate to change its secret")


async def rename_channel(conn: asyncpg.Connection, channel_id: str, display_name: str) -> None:
    done = await conn.fetchval(
        """UPDATE channel SET display_name = $2, updated_at = now()
           WHERE channel_id = $1 RETURNING 1""",
        channel_id,
        check_display_name(display_name),
    )
    if done is None:
        raise AdminError(f"no channel {channel_id!r}")


async def rotate_channel(
    conn: asyncpg.Connection, cipher: PiiCipher, channel_id: str, secret: str
) -> None:
    done = await conn.fetchval(
        """UPDATE channel SET secret_ciphertext = $2, updated_at = now()
           WHERE channel_id = $1 RETURNING 1""",
        channel_id,
        cipher.encrypt(secret, context=CHANNEL_SECRET_CONTEXT, row=channel_id),
    )
    if done is None:
        raise AdminError(f"no channel {channel_id!r}")


async def set_channel_status(
    conn: asyncpg.Connection, channel_id: str, status: str, reason: str
) -> None:
    done = await conn.fetchval(
        """UPDATE channel SET status = $2, status_reason = $3, updated_at = now()
           WHERE channel_id = $1 RETURNING 1""",
        channel_id,
        status,
        reason,
    )
    if done is None:
        raise AdminError(f"no channel {channel_id!r}")


async def set_signature_v1_until(
    conn: asyncpg.Connection, channel_id: str, until: dt.datetime | None
) -> None:
    """Open (until a time) or close (None) the channel's signature version 1 window."""
    done = await conn.fetchval(
        """UPDATE channel SET signature_v1_until = $2, updated_at = now()
           WHERE channel_id = $1 RETURNING 1""",
        channel_id,
        until,
    )
    if done is None:
        raise AdminError(f"no channel {channel_id!r}")


async def set_rate_limit(conn: asyncpg.Connection, channel_id: str, per_s: float | None) -> None:
    """The channel's own requests per second, or None for the engine's default."""
    if per_s is not None and not 0.1 <= per_s <= 100_000:
        raise AdminError("a rate limit is 0.1..100000 requests per second")
    done = await conn.fetchval(
        """UPDATE channel SET rate_limit_per_s = $2, updated_at = now()
           WHERE channel_id = $1 RETURNING 1""",
        channel_id,
        per_s,
    )
    if done is None:
        raise AdminError(f"no channel {channel_id!r}")


# The demo channel signs version 2 only (every client here does) and is not throttled
# below what the local benchmarks send.
DEMO_RATE_LIMIT_PER_S = 20_000.0


async def load_demo(conn: asyncpg.Connection, cipher: PiiCipher) -> None:
    """Tenant `demo`, products `demo-credit` and `demo-consumer`, channel `demo` (API.md)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO tenant (tenant_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            DEMO_TENANT,
            "演示农商银行 (demo)",
        )
        await conn.execute(
            _PRODUCT_SQL,
            "demo-credit", DEMO_TENANT, "农户经营性信用贷款 (demo)", ALL_METHODS,
            1, 36, 12, 6, 300_000_00, None, None, "2.00", "18.00", "1.5",
        )  # fmt: skip
        await conn.execute(
            _PRODUCT_SQL,
            "demo-consumer", DEMO_TENANT, "个人消费信用贷款 (demo)",
            ["equal_installment", "equal_principal", "bullet"],
            1, 24, 12, 0, 200_000_00, "internet_consumer", 200_000_00, "2.00", "18.00", "1.5",
        )  # fmt: skip
        exists = await conn.fetchval("SELECT 1 FROM channel WHERE channel_id = $1", DEMO_CHANNEL)
        if exists is None:
            await add_channel(
                conn, cipher, DEMO_CHANNEL, DEMO_TENANT, DEMO_SECRET, display_name=DEMO_CHANNEL_NAME
            )
        else:
            await rotate_channel(conn, cipher, DEMO_CHANNEL, DEMO_SECRET)
            await set_channel_status(conn, DEMO_CHANNEL, "active", "demo data")
            await rename_channel(conn, DEMO_CHANNEL, DEMO_CHANNEL_NAME)
        await set_signature_v1_until(conn, DEMO_CHANNEL, None)
        await set_rate_limit(conn, DEMO_CHANNEL, DEMO_RATE_LIMIT_PER_S)


async def set_business_date(conn: asyncpg.Connection, day: dt.date) -> None:
    await conn.execute("UPDATE business_clock SET business_date = $1, updated_at = now()", day)


async def forget_day_ends_from(conn: asyncpg.Connection, settings: Settings, day: dt.date) -> int:
    """The day-end's records of `day` and later, in the control database and every shard
    (dev and test only: the business date was set back by hand). Returns how many dates."""
    assert settings.env in ("dev", "test"), settings.env
    status = await conn.execute("DELETE FROM eod_day WHERE business_date >= $1", day)
    for shard in settings.shards:
        shard_conn = await asyncpg.connect(shard.dsn, timeout=10)
        try:
            await shard_conn.execute("DELETE FROM eod_progress WHERE business_date >= $1", day)
        finally:
            await shard_conn.close()
    return int(status.split()[-1])

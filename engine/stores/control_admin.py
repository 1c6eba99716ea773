"""Writes to the control database made by operators' commands (never by the hot path):
channels and their secrets, the demo data of the local stack, the business clock."""

from __future__ import annotations

import datetime as dt
import secrets

import asyncpg
import msgspec

from engine.contract.messages import ProductAdopt, TemplateCreate
from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores import product_admin
from engine.stores.reference import CHANNEL_SECRET_CONTEXT

DEMO_TENANT = "demo"
DEMO_CHANNEL = "demo"
DEMO_SECRET = "demo-secret"  # noqa: S105 - the local stack's published demo secret (API.md)
DEMO_CHANNEL_NAME = "演示手机银行"

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


DEMO_UNION = "union"
# The second member bank of the local stack, for the tenant-crossing tests (and people).
DEMO2_TENANT = "demo2"
DEMO2_CHANNEL = "demo2"
DEMO2_SECRET = "demo2-secret"  # noqa: S105 - published like DEMO_SECRET: dev and test only
DEMO_REGIONS = {DEMO_TENANT: ["1101"], DEMO2_TENANT: ["4201"]}

_DEMO_TEMPLATES = {
    "demo-credit": TemplateCreate(
        template_code="demo-credit", name="农户经营性信用贷款", loan_kind="business",
        repayment_methods=ALL_METHODS, term_months_min=1, term_months_max=36,  # type: ignore[arg-type]
        bullet_term_months_max=12, grace_months_max=6, line_limit_min="1.00",
        line_limit_max="300000.00", annual_rate_pct_floor="2.00", annual_rate_pct_cap="24.00",
        penalty_multiplier_min="1.3", penalty_multiplier_max="1.5",
        prepay_rules=["reduce_nearest", "reduce_amount", "reduce_term"],
    ),
    "demo-consumer": TemplateCreate(
        template_code="demo-consumer", name="个人消费信用贷款", loan_kind="consumer",
        repayment_methods=["equal_installment", "equal_principal", "bullet"],
        term_months_min=1, term_months_max=60, bullet_term_months_max=12, grace_months_max=0,
        line_limit_min="1.00", line_limit_max="200000.00", annual_rate_pct_floor="2.00",
        annual_rate_pct_cap="24.00", penalty_multiplier_min="1.3", penalty_multiplier_max="1.5",
        prepay_rules=["reduce_nearest", "reduce_amount", "reduce_term"],
        customer_cap_group="internet_consumer", customer_outstanding_max="200000.00",
    ),
}  # fmt: skip
_DEMO_PRODUCTS = [
    ProductAdopt(
        product_code="demo-credit", template_code="demo-credit", tenant_id=DEMO_TENANT,
        name="农户经营性信用贷款 (demo)", repayment_methods=ALL_METHODS,  # type: ignore[arg-type]
        term_months_min=1, term_months_max=36, bullet_term_months_max=12, grace_months_max=6,
        line_limit_max="300000.00", annual_rate_pct_min="2.00", annual_rate_pct_max="18.00",
        penalty_multiplier="1.5", prepay_rule_default="reduce_nearest",
    ),
    ProductAdopt(
        product_code="demo-consumer", template_code="demo-consumer", tenant_id=DEMO_TENANT,
        name="个人消费信用贷款 (demo)",
        repayment_methods=["equal_installment", "equal_principal", "bullet"],
        term_months_min=1, term_months_max=24, bullet_term_months_max=12, grace_months_max=0,
        line_limit_max="200000.00", annual_rate_pct_min="2.00", annual_rate_pct_max="18.00",
        penalty_multiplier="1.5", prepay_rule_default="reduce_nearest",
        customer_outstanding_max="200000.00",
    ),
    ProductAdopt(
        product_code="demo2-credit", template_code="demo-credit", tenant_id=DEMO2_TENANT,
        name="第二农商经营贷 (demo)", repayment_methods=ALL_METHODS,  # type: ignore[arg-type]
        term_months_min=1, term_months_max=24, bullet_term_months_max=12, grace_months_max=6,
        line_limit_max="200000.00", annual_rate_pct_min="3.00", annual_rate_pct_max="15.00",
        penalty_multiplier="1.5", prepay_rule_default="reduce_nearest",
    ),
]  # fmt: skip


async def _demo_channel(  # noqa: PLR0917
    conn: asyncpg.Connection,
    cipher: PiiCipher,
    channel_id: str,
    tenant_id: str,
    secret: str,
    name: str,
) -> None:
    exists = await conn.fetchval("SELECT 1 FROM channel WHERE channel_id = $1", channel_id)
    if exists is None:
        await add_channel(conn, cipher, channel_id, tenant_id, secret, display_name=name)
    else:
        await rotate_channel(conn, cipher, channel_id, secret)
        await set_channel_status(conn, channel_id, "active", "demo data")
        await rename_channel(conn, channel_id, name)
    await set_signature_v1_until(conn, channel_id, None)
    await set_rate_limit(conn, channel_id, DEMO_RATE_LIMIT_PER_S)


async def load_demo(conn: asyncpg.Connection, cipher: PiiCipher) -> None:
    """The union, its member banks `demo` and `demo2` with their regions, the union's
    templates `demo-credit` and `demo-consumer`, their adoptions (`demo-credit`,
    `demo-consumer` by demo, `demo2-credit` by demo2), channels `demo` and `demo2`
    (API.md). Products are put back to the demo's values and resumed."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO tenant (tenant_id, name, kind) VALUES ($1, $2, 'union')
               ON CONFLICT DO NOTHING""",
            DEMO_UNION,
            "省农村信用社联合社 (demo)",
        )
        for tenant_id, name in ((DEMO_TENANT, "演示农商银行 (demo)"),
                                (DEMO2_TENANT, "演示第二农商银行 (demo)")):  # fmt: skip
            await conn.execute(
                """INSERT INTO tenant (tenant_id, name, kind, parent_id, region_codes)
                   VALUES ($1, $2, 'member_bank', $3, $4)
                   ON CONFLICT (tenant_id) DO UPDATE SET region_codes = excluded.region_codes""",
                tenant_id,
                name,
                DEMO_UNION,
                DEMO_REGIONS[tenant_id],
            )
        for template in _DEMO_TEMPLATES.values():
            exists = await conn.fetchval(
                "SELECT 1 FROM product_template WHERE template_code = $1", template.template_code
            )
            if exists is None:
                await product_admin.create_template(conn, template)
            else:
                current = await product_admin.get_template(conn, template.template_code)
                wanted = msgspec.structs.replace(
                    product_admin.template_view_of(template), version=current.version
                )
                if wanted != current:
                    await product_admin.update_template(conn, template.template_code, template)
        for adoption in _DEMO_PRODUCTS:
            await product_admin.demo_product(conn, adoption)
        await _demo_channel(conn, cipher, DEMO_CHANNEL, DEMO_TENANT, DEMO_SECRET, DEMO_CHANNEL_NAME)
        await _demo_channel(
            conn, cipher, DEMO2_CHANNEL, DEMO2_TENANT, DEMO2_SECRET, "第二农商手机银行"
        )


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

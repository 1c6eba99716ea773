"""Global reference data — tenants, channels, products, the business date — cached
in every process.

Read on the hot path, never written there: each process loads it from the
control database at start-up and reloads it every `reference_refresh_s`
seconds (so `channels disable` or a product change reaches every worker within
that time). A failed reload keeps the last good copy and is logged; the
engine does not start without a first good load.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from decimal import Decimal

import asyncpg
import msgspec

from engine.contract.errors import ServiceUnavailable
from engine.security.pii import PiiCipher
from engine.stores.shards import acquire
from sharding.pools import PoolLimits

log = logging.getLogger(__name__)

CONTROL_POOL_LIMITS = PoolLimits(size_min=1, size_max=5)  # reference loads, leases: few
CHANNEL_SECRET_CONTEXT = "channel_secret"  # noqa: S105 - a name, not a secret
# What customers are told of operations no channel made: the day-end's automatic debits
# (engine.eod.deduct.SYSTEM_CHANNEL) have no row in the channel table.
SYSTEM_CHANNEL_NAMES = {"eod": "到期自动扣款"}
# Every prepayment rule (API.md's `prepay_rule`), sorted as products and templates keep them.
PREPAY_RULES: tuple[str, ...] = ("reduce_amount", "reduce_nearest", "reduce_term")


class Product(msgspec.Struct, frozen=True):
    product_code: str
    tenant_id: str
    name: str
    repayment_methods: tuple[str, ...]
    term_months_min: int
    term_months_max: int
    bullet_term_months_max: int
    grace_months_max: int
    line_limit_max_fen: int
    customer_cap_group: str | None
    customer_outstanding_max_fen: int | None
    annual_rate_pct_min: Decimal
    annual_rate_pct_max: Decimal
    penalty_multiplier: Decimal
    prepay_rule_default: str
    # Issue 19: the union's template it adopts, its version (every change makes one),
    # paused or active, where a customer's region comes from, consumer or business.
    template_code: str = ""
    version: int = 1
    status: str = "active"
    region_source: str = "id_number"
    loan_kind: str = "business"
    # Control migration 0009: the prepayment rules a repayment may ask for. A version's
    # terms written before it have none: every rule, as then.
    prepay_rules: tuple[str, ...] = PREPAY_RULES

    @property
    def paused(self) -> bool:
        return self.status == "paused"


class Tenant(msgspec.Struct, frozen=True):
    """The province union (kind "union") or one of its member banks (parent: the union)."""

    tenant_id: str
    name: str
    kind: str = "member_bank"
    parent_id: str | None = None
    region_codes: tuple[str, ...] = ()

    @property
    def is_union(self) -> bool:
        return self.kind == "union"

    def serves(self, region: str) -> bool:
        """The member bank's registered regions cover this 6-digit area code."""
        return any(region.startswith(code) for code in self.region_codes)


class Channel(msgspec.Struct, frozen=True):
    channel_id: str
    tenant_id: str
    secret: str
    active: bool
    display_name: str = ""  # what customers see in SMS; empty: not loaded (use the ID)
    # Until when signature version 1 is still accepted (a changeover window); None: never.
    signature_v1_until: dt.datetime | None = None
    rate_limit_per_s: float | None = None  # None: the engine's default


class Officer(msgspec.Struct, frozen=True):
    """A loan officer a post-loan rule may hand a late loan to."""

    officer_id: str
    tenant_id: str
    branch_code: str
    name: str
    active: bool


class ReferenceData(msgspec.Struct, frozen=True):
    tenants: frozenset[str]
    channels: dict[str, Channel]
    products: dict[str, Product]
    business_date: dt.date
    sms_templates: dict[tuple[str, str], str] = msgspec.field(default_factory=dict)
    officers: dict[str, Officer] = msgspec.field(default_factory=dict)
    tenant_info: dict[str, Tenant] = msgspec.field(default_factory=dict)
    # Every version of every product: a line's drawdowns use the version it was granted.
    product_versions: dict[tuple[str, int], Product] = msgspec.field(default_factory=dict)

    def product_terms(self, product_code: str, version: int) -> Product:
        """The terms of `version` of the product (the current ones if that version is not
        kept, as for a product written before versions existed). A version newer than
        the current one this data knows means the data is behind the control database
        (another engine changed the product within the last refresh): 503
        REFERENCE_DATA_BEHIND, to retry, never another version's terms."""
        kept = self.product_versions.get((product_code, version))
        if kept is not None:
            return kept
        if self.is_behind(product_code, version):
            current = self.products.get(product_code)
            known = "not at all" if current is None else f"up to version {current.version}"
            raise ServiceUnavailable(
                "REFERENCE_DATA_BEHIND",
                f"product {product_code} version {version} is newer than this engine's "
                f"reference data (it knows the product {known}); retry in a moment",
                headers={"Retry-After": "1"},
            )
        return self.products[product_code]

    def is_behind(self, product_code: str, version: int) -> bool:
        """The product, or this `version` of it, is newer than this data: a line or loan
        of it was made by an engine that has loaded it since."""
        current = self.products.get(product_code)
        return current is None or (
            version > current.version and (product_code, version) not in self.product_versions
        )

    def union_id(self) -> str | None:
        return next((t.tenant_id for t in self.tenant_info.values() if t.is_union), None)

    def member_banks(self, union_id: str) -> list[str]:
        return sorted(t.tenant_id for t in self.tenant_info.values() if t.parent_id == union_id)

    def branch_officers(self, tenant_id: str, branch_code: str) -> tuple[str, ...]:
        """The active officers of a branch in id order; the member bank's others if the
        branch has none."""
        active = [o for o in self.officers.values() if o.active and o.tenant_id == tenant_id]
        branch = sorted(o.officer_id for o in active if o.branch_code == branch_code)
        return tuple(branch or sorted(o.officer_id for o in active))

    def channel_name(self, channel_id: str) -> str:
        """The channel's display name for customers; its ID if it has none."""
        channel = self.channels.get(channel_id)
        if channel is not None and channel.display_name:
            return channel.display_name
        return SYSTEM_CHANNEL_NAMES.get(channel_id, channel_id)

    def sms_template(self, tenant_id: str, kind: str) -> str:
        """The tenant's own template, else the province-wide one (tenant '*')."""
        return self.sms_templates.get((tenant_id, kind)) or self.sms_templates[("*", kind)]


# API.md's demo secret (engine.stores.control_admin.DEMO_SECRET): public, so a channel
# holding it is anyone's. Production refuses to start with one, and disables any found
# later (`ReferenceCache`).
PUBLISHED_SECRETS = frozenset({"demo-secret", "demo2-secret"})


class PublishedSecretError(RuntimeError):
    """Production found an active channel whose secret is a published one."""


async def load_reference(pool: asyncpg.Pool, cipher: PiiCipher) -> ReferenceData:
    async with acquire(pool) as conn, conn.transaction(readonly=True):
        tenants = await conn.fetch(
            "SELECT tenant_id, name, kind, parent_id, region_codes FROM tenant"
        )
        channels = await conn.fetch(
            """SELECT channel_id, tenant_id, secret_ciphertext, status, display_name,
                      signature_v1_until, rate_limit_per_s FROM channel"""
        )
        products = await conn.fetch("SELECT * FROM product")
        versions = await conn.fetch("SELECT product_code, version, terms FROM product_version")
        business_date = await conn.fetchval("SELECT business_date FROM business_clock")
        templates = await conn.fetch("SELECT tenant_id, kind, body FROM sms_template")
        officers = await conn.fetch(
            "SELECT officer_id, tenant_id, branch_code, name, active FROM loan_officer"
        )
    return ReferenceData(
        tenants=frozenset(row["tenant_id"] for row in tenants),
        channels={
            row["channel_id"]: Channel(
                channel_id=row["channel_id"],
                tenant_id=row["tenant_id"],
                secret=cipher.decrypt(
                    row["secret_ciphertext"], context=CHANNEL_SECRET_CONTEXT, row=row["channel_id"]
                ),
                active=row["status"] == "active",
                display_name=row["display_name"],
                signature_v1_until=row["signature_v1_until"],
                rate_limit_per_s=(
                    None if row["rate_limit_per_s"] is None else float(row["rate_limit_per_s"])
                ),
            )
            for row in channels
        },
        products={row["product_code"]: product_of_row(row) for row in products},
        business_date=business_date,
        sms_templates={(row["tenant_id"], row["kind"]): row["body"] for row in templates},
        officers={row["officer_id"]: Officer(**dict(row)) for row in officers},
        tenant_info={
            row["tenant_id"]: Tenant(
                tenant_id=row["tenant_id"],
                name=row["name"],
                kind=row["kind"],
                parent_id=row["parent_id"],
                region_codes=tuple(row["region_codes"]),
            )
            for row in tenants
        },
        product_versions={
            (row["product_code"], row["version"]): terms_of(row["terms"]) for row in versions
        },
    )


def terms_of(raw: str | bytes) -> Product:
    """A product_version row's terms (a JSON object of the product's columns)."""
    return msgspec.json.decode(raw, type=Product, strict=False)


def product_of_row(row: asyncpg.Record) -> Product:
    return Product(
        product_code=row["product_code"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        repayment_methods=tuple(row["repayment_methods"]),
        term_months_min=row["term_months_min"],
        term_months_max=row["term_months_max"],
        bullet_term_months_max=row["bullet_term_months_max"],
        grace_months_max=row["grace_months_max"],
        line_limit_max_fen=row["line_limit_max_fen"],
        customer_cap_group=row["customer_cap_group"],
        customer_outstanding_max_fen=row["customer_outstanding_max_fen"],
        annual_rate_pct_min=row["annual_rate_pct_min"],
        annual_rate_pct_max=row["annual_rate_pct_max"],
        penalty_multiplier=row["penalty_multiplier"],
        prepay_rule_default=row["prepay_rule_default"],
        template_code=row["template_code"],
        version=row["version"],
        status=row["status"],
        region_source=row["region_source"],
        loan_kind=row["loan_kind"],
        prepay_rules=tuple(row["prepay_rules"]),
    )


class ReferenceCache:
    """Holds the current `ReferenceData`; `refresh_forever` keeps it fresh."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cipher: PiiCipher,
        refresh_s: float,
        *,
        refuse_published_secrets: bool = False,
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._refresh_s = refresh_s
        self._refuse_published = refuse_published_secrets  # production: env = prod
        self.current: ReferenceData | None = None
        self._catching_up = asyncio.Lock()

    async def load(self) -> ReferenceData:
        data = await load_reference(self._pool, self._cipher)
        if self._refuse_published:
            data = self._without_published_secrets(data)
        self.current = data
        return data

    def _without_published_secrets(self, data: ReferenceData) -> ReferenceData:
        """At start-up a channel on a published secret stops the engine; found by a
        reload later, it is treated as disabled (and said so loudly)."""
        exposed = sorted(
            c.channel_id
            for c in data.channels.values()
            if c.active and c.secret in PUBLISHED_SECRETS
        )
        if not exposed:
            return data
        message = (
            f"channels {', '.join(exposed)} use a published secret: rotate them "
            "(python -m engine channels rotate ID) or disable them"
        )
        if self.current is None:
            raise PublishedSecretError(message)
        log.error("refusing channels: %s", message)
        channels = dict(data.channels)
        for channel_id in exposed:
            channels[channel_id] = msgspec.structs.replace(channels[channel_id], active=False)
        return msgspec.structs.replace(data, channels=channels)

    @property
    def data(self) -> ReferenceData:
        assert self.current is not None, "reference data is loaded at start-up"
        return self.current

    async def catch_up(self, product_code: str, version: int) -> None:
        """Reload now if `version` of the product is newer than this data knows: another
        engine changed the product since the last refresh, and a line or loan of the
        new version is being served here. Without it, `product_terms` answers 503."""
        if not self.data.is_behind(product_code, version):
            return
        async with self._catching_up:  # one reload for the requests that meet it at once
            if self.data.is_behind(product_code, version):
                try:
                    await self.load()
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    log.warning("reference data reload failed", extra={"error": repr(exc)})

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.load()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning(
                    "reference data reload failed; keeping the last copy",
                    extra={"error": repr(exc)},
                )

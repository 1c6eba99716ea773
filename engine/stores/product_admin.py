"""Two-level products in the control database (issue 19): the union's templates and
the member banks' adoptions, each change a new version; and the tenant tree.

    template (union)   ranges: methods, terms, line amounts, rate floor and cap, penalty
                       factor, prepayment rules, the per-customer cap, the region rule;
                       a consumer template runs at most 60 months
    product (a bank)   its own values inside its template's ranges (a value outside:
                       422 PRODUCT_VALUE_OUT_OF_RANGE naming the field and the range,
                       nothing stored); paused or active; every change (values, pause,
                       resume) writes the next version's terms to product_version

Who may do what is the caller's business (engine.http.admin_context): these functions
take the scope they are given. Errors are the API's (problem+json codes), so the HTTP
handlers and the CLI report the same refusals.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from engine.contract.errors import Conflict, NotFound, Unprocessable
from engine.contract.messages import (
    ProductAdopt,
    ProductValues,
    ProductVersionList,
    ProductVersionView,
    ProductView,
    TemplateBody,
    TemplateCreate,
    TemplateView,
    TenantChange,
    TenantCreate,
    TenantView,
)
from engine.stores.reference import Product, product_of_row, terms_of
from ledger.money import MoneyFormatError, format_fen, format_rate_pct, parse_amount, parse_rate_pct

CONSUMER_TERM_MONTHS_MAX = 60  # engine.services.product_rules says the same at drawdown


def _fen(text: str, field: str) -> int:
    try:
        return parse_amount(text)
    except MoneyFormatError as exc:
        raise Unprocessable("PRODUCT_VALUE_INVALID", f"{field}: {exc.detail}") from exc


def _rate(text: str, field: str) -> Decimal:
    try:
        return parse_rate_pct(text)
    except MoneyFormatError as exc:
        raise Unprocessable("PRODUCT_VALUE_INVALID", f"{field}: {exc.detail}") from exc


def _multiplier(text: str) -> Decimal:
    value = Decimal(text)
    if not Decimal("1.3") <= value <= Decimal("1.5"):
        raise Unprocessable(
            "PRODUCT_VALUE_OUT_OF_RANGE",
            f"penalty multiplier {text} is outside the regulator's range 1.3..1.5",
        )
    return value


def _mult_text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else str(value)


# ---- templates ---------------------------------------------------------------------------


def template_view(row: asyncpg.Record) -> TemplateView:
    cap = row["customer_outstanding_max_fen"]
    return TemplateView(
        template_code=row["template_code"],
        version=row["version"],
        name=row["name"],
        loan_kind=row["loan_kind"],
        repayment_methods=list(row["repayment_methods"]),
        term_months_min=row["term_months_min"],
        term_months_max=row["term_months_max"],
        bullet_term_months_max=row["bullet_term_months_max"],
        grace_months_max=row["grace_months_max"],
        line_limit_min=format_fen(row["line_limit_min_fen"]),
        line_limit_max=format_fen(row["line_limit_max_fen"]),
        annual_rate_pct_floor=format_rate_pct(row["annual_rate_pct_floor"]),
        annual_rate_pct_cap=format_rate_pct(row["annual_rate_pct_cap"]),
        penalty_multiplier_min=_mult_text(row["penalty_multiplier_min"]),
        penalty_multiplier_max=_mult_text(row["penalty_multiplier_max"]),
        prepay_rules=list(row["prepay_rules"]),
        customer_cap_group=row["customer_cap_group"],
        customer_outstanding_max=None if cap is None else format_fen(cap),
        region_source=row["region_source"],
    )


def _template_args(body: TemplateBody) -> tuple[Any, ...]:
    """The template's columns after its code, checked for consistency."""
    lo_fen = _fen(body.line_limit_min, "line_limit_min")
    hi_fen = _fen(body.line_limit_max, "line_limit_max")
    floor = _rate(body.annual_rate_pct_floor, "annual_rate_pct_floor")
    cap = _rate(body.annual_rate_pct_cap, "annual_rate_pct_cap")
    pen_lo, pen_hi = (
        _multiplier(body.penalty_multiplier_min),
        _multiplier(body.penalty_multiplier_max),
    )
    problems = []
    if body.term_months_min > body.term_months_max:
        problems.append("term_months_min > term_months_max")
    if lo_fen <= 0 or lo_fen > hi_fen:
        problems.append("line_limit_min must be positive and at most line_limit_max")
    if floor > cap:
        problems.append("annual_rate_pct_floor > annual_rate_pct_cap")
    if pen_lo > pen_hi:
        problems.append("penalty_multiplier_min > penalty_multiplier_max")
    if (body.customer_cap_group is None) != (body.customer_outstanding_max is None):
        problems.append("customer_cap_group and customer_outstanding_max go together")
    if problems:
        raise Unprocessable("TEMPLATE_INVALID", "; ".join(problems))
    if body.loan_kind == "consumer" and body.term_months_max > CONSUMER_TERM_MONTHS_MAX:
        raise Unprocessable(
            "TERM_EXCEEDS_REGULATORY_MAX",
            f"a consumer loan may run at most {CONSUMER_TERM_MONTHS_MAX} months (5 years): "
            f"term_months_max {body.term_months_max}",
        )
    cap_fen = (
        None
        if body.customer_outstanding_max is None
        else _fen(body.customer_outstanding_max, "customer_outstanding_max")
    )
    return (
        body.name,
        body.loan_kind,
        sorted(set(body.repayment_methods)),
        body.term_months_min,
        body.term_months_max,
        body.bullet_term_months_max,
        body.grace_months_max,
        lo_fen,
        hi_fen,
        floor,
        cap,
        pen_lo,
        pen_hi,
        sorted(set(body.prepay_rules)),
        body.customer_cap_group,
        cap_fen,
        body.region_source,
    )


_TEMPLATE_COLUMNS = """name, loan_kind, repayment_methods, term_months_min, term_months_max,
    bullet_term_months_max, grace_months_max, line_limit_min_fen, line_limit_max_fen,
    annual_rate_pct_floor, annual_rate_pct_cap, penalty_multiplier_min, penalty_multiplier_max,
    prepay_rules, customer_cap_group, customer_outstanding_max_fen, region_source"""


async def list_templates(conn: asyncpg.Connection) -> list[TemplateView]:
    rows = await conn.fetch("SELECT * FROM product_template ORDER BY template_code")
    return [template_view(r) for r in rows]


async def get_template(conn: asyncpg.Connection, code: str, *, lock: bool = False) -> TemplateView:
    sql = "SELECT * FROM product_template WHERE template_code = $1"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), code)
    if row is None:
        raise NotFound("TEMPLATE_NOT_FOUND", f"no product template {code!r}")
    return template_view(row)


async def create_template(conn: asyncpg.Connection, body: TemplateCreate) -> TemplateView:
    args = _template_args(body)
    row = await conn.fetchrow(
        f"""INSERT INTO product_template (template_code, {_TEMPLATE_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                    $18)
            ON CONFLICT (template_code) DO NOTHING RETURNING *""",
        body.template_code,
        *args,
    )
    if row is None:
        raise Conflict("TEMPLATE_EXISTS", f"product template {body.template_code!r} exists")
    return template_view(row)


async def update_template(
    conn: asyncpg.Connection, code: str, body: TemplateBody
) -> tuple[TemplateView, TemplateView]:
    """The whole template anew (its next version); adoptions keep their values, and their
    next change is checked against the new ranges. Returns (before, after)."""
    before = await get_template(conn, code, lock=True)
    args = _template_args(body)
    row = await conn.fetchrow(
        f"""UPDATE product_template SET ({_TEMPLATE_COLUMNS}) =
                ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18),
                version = version + 1, updated_at = now()
            WHERE template_code = $1 RETURNING *""",
        code,
        *args,
    )
    assert row is not None
    return before, template_view(row)


# ---- products (adoptions) ------------------------------------------------------------------


def product_view(p: Product, status_reason: str | None = None) -> ProductView:
    cap = p.customer_outstanding_max_fen
    return ProductView(
        product_code=p.product_code,
        tenant_id=p.tenant_id,
        template_code=p.template_code,
        version=p.version,
        status=p.status,
        status_reason=status_reason,
        name=p.name,
        loan_kind=p.loan_kind,
        repayment_methods=list(p.repayment_methods),
        term_months_min=p.term_months_min,
        term_months_max=p.term_months_max,
        bullet_term_months_max=p.bullet_term_months_max,
        grace_months_max=p.grace_months_max,
        line_limit_max=format_fen(p.line_limit_max_fen),
        annual_rate_pct_min=format_rate_pct(p.annual_rate_pct_min),
        annual_rate_pct_max=format_rate_pct(p.annual_rate_pct_max),
        penalty_multiplier=_mult_text(p.penalty_multiplier),
        prepay_rule_default=p.prepay_rule_default,
        prepay_rules=list(p.prepay_rules),
        customer_cap_group=p.customer_cap_group,
        customer_outstanding_max=None if cap is None else format_fen(cap),
        region_source=p.region_source,
    )


def _out_of_range(field: str, value: object, lo: object, hi: object) -> Unprocessable:
    return Unprocessable(
        "PRODUCT_VALUE_OUT_OF_RANGE",
        f"{field} {value} is outside the union template's range {lo}..{hi}",
    )


def _within(field: str, value: Any, lo: Any, hi: Any, shown: tuple[str, str, str]) -> None:
    if not lo <= value <= hi:
        raise _out_of_range(field, *shown)


def _subset(field: str, given: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """`given`, sorted and without repeats, if every one is among the template's."""
    outside = sorted(set(given) - set(allowed))
    if outside:
        raise Unprocessable(
            "PRODUCT_VALUE_OUT_OF_RANGE",
            f"{field} {', '.join(outside)} are not among the template's ({', '.join(allowed)})",
        )
    return tuple(sorted(set(given)))


def apply_values(t: TemplateView, current: Product, values: ProductValues) -> Product:  # noqa: PLR0915
    """`current` with the values given, each checked against the template's range."""
    p = current
    if values.name is not None:
        p = msgspec.structs.replace(p, name=values.name)
    if values.repayment_methods is not None:
        methods = _subset("repayment_methods", values.repayment_methods, t.repayment_methods)
        p = msgspec.structs.replace(p, repayment_methods=methods)
    for field in ("term_months_min", "term_months_max"):
        value = getattr(values, field)
        if value is not None:
            _within(field, value, t.term_months_min, t.term_months_max,
                    (str(value), str(t.term_months_min), str(t.term_months_max)))  # fmt: skip
            p = msgspec.structs.replace(p, **{field: value})
    if values.bullet_term_months_max is not None:
        v = values.bullet_term_months_max
        _within("bullet_term_months_max", v, 1, t.bullet_term_months_max,
                (str(v), "1", str(t.bullet_term_months_max)))  # fmt: skip
        p = msgspec.structs.replace(p, bullet_term_months_max=v)
    if values.grace_months_max is not None:
        v = values.grace_months_max
        _within("grace_months_max", v, 0, t.grace_months_max,
                (str(v), "0", str(t.grace_months_max)))  # fmt: skip
        p = msgspec.structs.replace(p, grace_months_max=v)
    lo_fen, hi_fen = parse_amount(t.line_limit_min), parse_amount(t.line_limit_max)
    if values.line_limit_max is not None:
        fen = _fen(values.line_limit_max, "line_limit_max")
        _within("line_limit_max", fen, lo_fen, hi_fen,
                (values.line_limit_max, t.line_limit_min, t.line_limit_max))  # fmt: skip
        p = msgspec.structs.replace(p, line_limit_max_fen=fen)
    floor, cap = Decimal(t.annual_rate_pct_floor), Decimal(t.annual_rate_pct_cap)
    for field in ("annual_rate_pct_min", "annual_rate_pct_max"):
        text = getattr(values, field)
        if text is not None:
            rate = _rate(text, field)
            _within(field, rate, floor, cap,
                    (text, t.annual_rate_pct_floor, t.annual_rate_pct_cap))  # fmt: skip
            p = msgspec.structs.replace(p, **{field: rate})
    if values.penalty_multiplier is not None:
        m = Decimal(values.penalty_multiplier)
        lo, hi = Decimal(t.penalty_multiplier_min), Decimal(t.penalty_multiplier_max)
        shown = (values.penalty_multiplier, t.penalty_multiplier_min, t.penalty_multiplier_max)
        _within("penalty_multiplier", m, lo, hi, shown)
        p = msgspec.structs.replace(p, penalty_multiplier=m)
    if values.prepay_rule_default is not None:
        if values.prepay_rule_default not in t.prepay_rules:
            raise Unprocessable(
                "PRODUCT_VALUE_OUT_OF_RANGE",
                f"prepay_rule_default {values.prepay_rule_default} is not among the template's "
                f"({', '.join(t.prepay_rules)})",
            )
        p = msgspec.structs.replace(p, prepay_rule_default=values.prepay_rule_default)
    if values.prepay_rules is not None:
        rules = _subset("prepay_rules", values.prepay_rules, t.prepay_rules)
        p = msgspec.structs.replace(p, prepay_rules=rules)
    if values.customer_outstanding_max is not None:
        if t.customer_outstanding_max is None:
            raise Unprocessable(
                "PRODUCT_VALUE_OUT_OF_RANGE",
                "customer_outstanding_max: the template has no per-customer cap",
            )
        fen = _fen(values.customer_outstanding_max, "customer_outstanding_max")
        _within("customer_outstanding_max", fen, 1, parse_amount(t.customer_outstanding_max),
                (values.customer_outstanding_max, "0.01", t.customer_outstanding_max))  # fmt: skip
        p = msgspec.structs.replace(p, customer_outstanding_max_fen=fen)
    if values.region_source is not None:
        p = msgspec.structs.replace(p, region_source=values.region_source)
    problems = []
    if p.term_months_min > p.term_months_max:
        problems.append("term_months_min > term_months_max")
    if p.annual_rate_pct_min > p.annual_rate_pct_max:
        problems.append("annual_rate_pct_min > annual_rate_pct_max")
    if p.prepay_rule_default not in p.prepay_rules:
        problems.append(f"prepay_rule_default {p.prepay_rule_default} is not among prepay_rules")
    if problems:
        raise Unprocessable("PRODUCT_VALUE_INVALID", "; ".join(problems))
    return p


def from_template(t: TemplateView, product_code: str, tenant_id: str) -> Product:
    """An adoption before its own values: the template's widest terms."""
    cap = t.customer_outstanding_max
    return Product(
        product_code=product_code,
        tenant_id=tenant_id,
        name=t.name,
        repayment_methods=tuple(t.repayment_methods),
        term_months_min=t.term_months_min,
        term_months_max=t.term_months_max,
        bullet_term_months_max=t.bullet_term_months_max,
        grace_months_max=t.grace_months_max,
        line_limit_max_fen=parse_amount(t.line_limit_max),
        customer_cap_group=t.customer_cap_group,
        customer_outstanding_max_fen=None if cap is None else parse_amount(cap),
        annual_rate_pct_min=Decimal(t.annual_rate_pct_floor),
        annual_rate_pct_max=Decimal(t.annual_rate_pct_cap),
        penalty_multiplier=Decimal(t.penalty_multiplier_max),
        prepay_rule_default=t.prepay_rules[0],
        template_code=t.template_code,
        version=1,
        status="active",
        region_source=t.region_source,
        loan_kind=t.loan_kind,
        prepay_rules=tuple(t.prepay_rules),
    )


_PRODUCT_COLUMNS = """tenant_id, name, repayment_methods, term_months_min, term_months_max,
    bullet_term_months_max, grace_months_max, line_limit_max_fen, customer_cap_group,
    customer_outstanding_max_fen, annual_rate_pct_min, annual_rate_pct_max, penalty_multiplier,
    prepay_rule_default, template_code, version, status, region_source, loan_kind,
    prepay_rules"""


def _product_args(p: Product) -> tuple[Any, ...]:
    return (
        p.tenant_id, p.name, list(p.repayment_methods), p.term_months_min, p.term_months_max,
        p.bullet_term_months_max, p.grace_months_max, p.line_limit_max_fen, p.customer_cap_group,
        p.customer_outstanding_max_fen, p.annual_rate_pct_min, p.annual_rate_pct_max,
        p.penalty_multiplier, p.prepay_rule_default, p.template_code, p.version, p.status,
        p.region_source, p.loan_kind, list(p.prepay_rules),
    )  # fmt: skip


async def _write_version(conn: asyncpg.Connection, p: Product, by: str) -> None:
    await conn.execute(
        """INSERT INTO product_version (product_code, version, terms, changed_by)
           VALUES ($1, $2, $3::jsonb, $4)""",
        p.product_code,
        p.version,
        msgspec.json.encode(p).decode(),
        by,
    )


async def get_product(
    conn: asyncpg.Connection, code: str, scope: str | None, *, lock: bool = False
) -> tuple[Product, str | None]:
    """The product and its status reason; 404 if absent or not of `scope` (a member bank's
    id; None: the union, any bank's)."""
    sql = "SELECT * FROM product WHERE product_code = $1"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), code)
    if row is None or (scope is not None and row["tenant_id"] != scope):
        raise NotFound("PRODUCT_NOT_FOUND", f"no product {code!r}")
    return product_of_row(row), row["status_reason"]


async def list_products(conn: asyncpg.Connection, scope: str | None) -> list[ProductView]:
    rows = await conn.fetch(
        "SELECT * FROM product WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY product_code",
        scope,
    )
    return [product_view(product_of_row(r), r["status_reason"]) for r in rows]


async def _member_bank(conn: asyncpg.Connection, tenant_id: str) -> None:
    kind = await conn.fetchval("SELECT kind FROM tenant WHERE tenant_id = $1", tenant_id)
    if kind != "member_bank":
        raise NotFound("TENANT_NOT_FOUND", f"no member bank {tenant_id!r}")


async def adopt(
    conn: asyncpg.Connection, body: ProductAdopt, tenant_id: str, by: str
) -> ProductView:
    """Version 1 of a member bank's product from a union template."""
    await _member_bank(conn, tenant_id)
    template = await get_template(conn, body.template_code)
    product = apply_values(template, from_template(template, body.product_code, tenant_id), body)
    done = await conn.fetchval(
        f"""INSERT INTO product (product_code, {_PRODUCT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                    $18, $19, $20, $21)
            ON CONFLICT (product_code) DO NOTHING RETURNING 1""",
        product.product_code,
        *_product_args(product),
    )
    if done is None:
        raise Conflict("PRODUCT_EXISTS", f"product {body.product_code!r} exists")
    await _write_version(conn, product, by)
    return product_view(product)


async def _next_version(
    conn: asyncpg.Connection, product: Product, status_reason: str | None, by: str
) -> ProductView:
    product = msgspec.structs.replace(product, version=product.version + 1)
    await conn.execute(
        f"""UPDATE product SET ({_PRODUCT_COLUMNS}) =
                ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21),
                status_reason = $22, updated_at = now()
            WHERE product_code = $1""",
        product.product_code,
        *_product_args(product),
        status_reason,
    )
    await _write_version(conn, product, by)
    return product_view(product, status_reason)


async def update_product(
    conn: asyncpg.Connection, code: str, values: ProductValues, scope: str | None, by: str
) -> tuple[ProductView, ProductView]:
    """The product's next version with the values changed; (before, after)."""
    current, reason = await get_product(conn, code, scope, lock=True)
    template = await get_template(conn, current.template_code)
    changed = apply_values(template, current, values)
    return product_view(current, reason), await _next_version(conn, changed, reason, by)


async def set_product_status(
    conn: asyncpg.Connection, code: str, status: str, reason: str, *, scope: str | None, by: str
) -> tuple[ProductView, ProductView]:
    """Pause (no new lines or drawdowns) or resume; each is a version. (before, after)"""
    assert status in ("active", "paused"), status
    current, old_reason = await get_product(conn, code, scope, lock=True)
    if current.status == status:
        raise Unprocessable(
            "PRODUCT_STATUS_UNCHANGED", f"product {code!r} is already {current.status}"
        )
    changed = msgspec.structs.replace(current, status=status)
    after = await _next_version(conn, changed, reason, by)
    return product_view(current, old_reason), after


async def product_versions(
    conn: asyncpg.Connection, code: str, scope: str | None
) -> ProductVersionList:
    await get_product(conn, code, scope)
    rows = await conn.fetch(
        """SELECT version, terms, changed_by, created_at FROM product_version
           WHERE product_code = $1 ORDER BY version""",
        code,
    )
    return ProductVersionList(
        product_code=code,
        versions=[
            ProductVersionView(
                version=r["version"],
                changed_by=r["changed_by"],
                created_at=r["created_at"],
                terms=product_view(terms_of(r["terms"])),
            )
            for r in rows
        ],
    )


# ---- tenants -------------------------------------------------------------------------------


async def tenant_view(conn: asyncpg.Connection, tenant_id: str) -> TenantView:
    row = await conn.fetchrow(
        """SELECT t.*, coalesce((SELECT array_agg(channel_id ORDER BY channel_id) FROM channel c
                                 WHERE c.tenant_id = t.tenant_id), '{}') AS channels
           FROM tenant t WHERE tenant_id = $1""",
        tenant_id,
    )
    if row is None:
        raise NotFound("TENANT_NOT_FOUND", f"no tenant {tenant_id!r}")
    return TenantView(
        tenant_id=row["tenant_id"],
        name=row["name"],
        kind=row["kind"],
        parent_id=row["parent_id"],
        region_codes=list(row["region_codes"]),
        channels=list(row["channels"]),
    )


async def list_tenants(conn: asyncpg.Connection, scope: str | None) -> list[TenantView]:
    ids = await conn.fetch(
        "SELECT tenant_id FROM tenant WHERE ($1::text IS NULL OR tenant_id = $1) "
        "ORDER BY kind DESC, tenant_id",
        scope,
    )
    return [await tenant_view(conn, r["tenant_id"]) for r in ids]


async def create_member_bank(
    conn: asyncpg.Connection, body: TenantCreate, union_id: str
) -> TenantView:
    done = await conn.fetchval(
        """INSERT INTO tenant (tenant_id, name, kind, parent_id, region_codes)
           VALUES ($1, $2, 'member_bank', $3, $4)
           ON CONFLICT (tenant_id) DO NOTHING RETURNING 1""",
        body.tenant_id,
        body.name,
        union_id,
        sorted(set(body.region_codes)),
    )
    if done is None:
        raise Conflict("TENANT_EXISTS", f"tenant {body.tenant_id!r} exists")
    return await tenant_view(conn, body.tenant_id)


async def change_tenant(
    conn: asyncpg.Connection, tenant_id: str, body: TenantChange
) -> tuple[TenantView, TenantView]:
    before = await tenant_view(conn, tenant_id)
    if body.region_codes is not None and before.kind == "union":
        raise Unprocessable(
            "TENANT_NOT_A_MEMBER_BANK", "the union lends through its member banks: no regions"
        )
    await conn.execute(
        """UPDATE tenant SET name = coalesce($2, name),
               region_codes = coalesce($3, region_codes), updated_at = now()
           WHERE tenant_id = $1""",
        tenant_id,
        body.name,
        None if body.region_codes is None else sorted(set(body.region_codes)),
    )
    return before, await tenant_view(conn, tenant_id)


# ---- the local stack's demo data (engine.stores.control_admin.load_demo) -------------------


def template_view_of(body: TemplateCreate) -> TemplateView:
    """The view a template written from `body` would have (version 1)."""
    names = [c.strip() for c in _TEMPLATE_COLUMNS.split(",")]
    row = dict(zip(names, _template_args(body), strict=True))
    return template_view({"template_code": body.template_code, "version": 1, **row})  # type: ignore[arg-type]


async def demo_product(conn: asyncpg.Connection, adoption: ProductAdopt) -> None:
    """Adopt, or put the product back to the demo's values, active (a version if changed)."""
    tenant_id = adoption.tenant_id
    assert tenant_id is not None
    row = await conn.fetchrow(
        "SELECT 1 FROM product WHERE product_code = $1 FOR UPDATE", adoption.product_code
    )
    if row is None:
        await adopt(conn, adoption, tenant_id, "demo")
        return
    current, _ = await get_product(conn, adoption.product_code, None, lock=True)
    template = await get_template(conn, adoption.template_code)
    base = from_template(template, adoption.product_code, tenant_id)
    wanted = msgspec.structs.replace(
        apply_values(template, base, adoption), version=current.version, status="active"
    )
    if wanted != current:
        await _next_version(conn, wanted, None, "demo")

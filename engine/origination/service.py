"""Origination: application ─► identity ─► bureau ─► decision ─► line + e-contract.

    POST /v1/applications (idempotent, one per channel serial)
      phase A (one shard transaction, the applicant's shard by ID number)
        identity checked (four factors through the verifier) ─► application `received`
        facts: existing customer, white list, black list, our own overdue loans,
               the ID card's validity
        the rules without a report: a hard refusal (age, ID invalid or expired, black
               list, overdue with us), or a white-listed approval, is final: the bureau
               is never asked (a query shows on the person's credit report)
        otherwise the decision depends on the report:
               the applicant's authorization evidenced in the hash chain (`consent`)
               ─► a report of this member bank still valid (reused: one query per
               window) ─► decide now;  else `pending_bureau` + outbox `bureau`
      inline (bounded by the bureau time-out), or later by the relay:
        query the bureau ─► phase B: store the parsed report, decide
      decide (rule set as data, gray release by application ID)
        approved       ─► customer, credit line (same service as POST /v1/credit-lines),
                          contracts rendered, unsigned [面签 first, if the rules say so]
                          ─► `approved`
        refused        ─► `refused` with the reason codes
        pending_review ─► the operators' review queue (approve ─► as approved)

Every step is recorded with its time in `steps`; the journey ends at `disbursed`.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import asyncpg
import msgspec

from engine.adapters.bureau import (
    BureauIndicators,
    BureauOutcome,
    BureauResult,
    IdentityVerifier,
    parse_report,
)
from engine.contract.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from engine.contract.messages import (
    Applicant,
    ApplicationCreate,
    ApplicationView,
    CreditLineCreate,
    CreditLineView,
    CustomerCreate,
    DecisionView,
    Step,
)
from engine.origination import consent, evidence, face_to_face
from engine.origination import decision as rules
from engine.origination.contracts import ContractDocument, create_contracts
from engine.origination.lists import blacklisted, white_entry
from engine.origination.otp import OtpPolicy
from engine.runtime import metrics
from engine.security.identity import (
    IdentityError,
    age_on,
    mask_id_number,
    parse_bank_card,
    parse_id_number,
    parse_phone,
)
from engine.services import product_rules
from engine.services.context import Services
from engine.services.credit_lines import grant_line
from engine.services.customers import ID_NUMBER, NewCustomer, insert_customer, mask_name
from engine.stores.outbox import enqueue
from engine.stores.reference import Channel
from ledger.money import MoneyFormatError, format_fen, format_rate_pct, parse_amount
from sharding.routing import logical_shard_for_id_number

APPLICANT = "applicant"
LINE_VALID_DAYS = 365


class Origination(msgspec.Struct, frozen=True):
    """What origination needs beyond the services: rule sets and their release."""

    rule_sets: dict[str, dict[str, rules.RuleSet]]
    current_versions: dict[str, str]
    candidate_versions: dict[str, str]
    candidate_percent: int
    report_valid_days: int
    otp: OtpPolicy


class Checked(msgspec.Struct, frozen=True):
    body: ApplicationCreate
    identity_verified: bool
    id_number: str
    birth_date: dt.date
    phone: str
    card: str
    amount_fen: int
    logical_shard: int


async def check_request(
    svc: Services,
    ctx: Origination,
    verifier: IdentityVerifier,
    channel: Channel,
    body: ApplicationCreate,
) -> Checked:
    """Everything checked before the shard is touched, the four-factor verification included."""
    if body.tenant_id != channel.tenant_id:
        raise Forbidden(
            "TENANT_FORBIDDEN", "a channel may only apply for customers of its own tenant"
        )
    product = svc.product_for(channel, body.product_code)
    if product is None:
        raise Unprocessable("PRODUCT_UNKNOWN", f"no product {body.product_code!r} for this tenant")
    product_rules.check_active(product)
    product_rules.check_term(product, body.requested_term_months)
    if not body.consent.credit_report:
        raise Unprocessable(
            "CONSENT_REQUIRED", "the applicant must authorize the credit report query"
        )
    rule_set_key(svc, ctx, body.product_code)
    consent.check_consent_time(body.consent, dt.datetime.now(dt.UTC))
    _check_id_validity(body.applicant, svc.business_date)
    try:
        id_number = parse_id_number(body.applicant.id_number, today=svc.business_date)
        phone = parse_phone(body.applicant.phone)
        card = parse_bank_card(body.applicant.bank_card)
        amount_fen = parse_amount(body.requested_amount)
    except (IdentityError, MoneyFormatError) as exc:
        raise BadRequest(exc.code, exc.detail) from exc
    # The regional rule before anything leaves the engine (the verification is a call out).
    product_rules.check_region(
        svc.reference.data,
        channel.tenant_id,
        product,
        id_number.value[:6],
        body.applicant.residence_region,
    )
    check = await verifier.verify(body.applicant.name, id_number.value, phone, card)
    if check.verified is None:
        raise ServiceUnavailable(
            "IDENTITY_VERIFICATION_UNAVAILABLE",
            "the identity verification service did not answer; retry later",
            headers={"Retry-After": "5"},
        )
    return Checked(
        body,
        check.verified,
        id_number.value,
        id_number.birth_date,
        phone,
        card,
        amount_fen,
        logical_shard_for_id_number(id_number.value),
    )


def rule_set_key(svc: Services, ctx: Origination, product_code: str) -> str:
    """The rule sets a product is decided by: its own, else its union template's (a
    member bank's adoption of a template decides as the union wrote it)."""
    if product_code in ctx.rule_sets:
        return product_code
    product = svc.reference.data.products.get(product_code)
    if product is not None and product.template_code in ctx.rule_sets:
        return product.template_code
    raise Unprocessable(
        "PRODUCT_HAS_NO_RULE_SET",
        f"product {product_code!r} has no rule set (nor has its template): it takes no "
        "applications",
    )


def _check_id_validity(applicant: Applicant, today: dt.date) -> None:
    """400 ID_VALIDITY_INVALID for dates no ID card has (an expired one is the rules'
    business: ID_EXPIRED)."""
    start, end = applicant.id_valid_from, applicant.id_valid_until
    problem = None
    if applicant.id_long_term and end is not None:
        problem = "give id_valid_until or id_long_term, not both"
    elif start is not None and start > today:
        problem = "id_valid_from is after the business date"
    elif start is not None and end is not None and end < start:
        problem = "id_valid_until is before id_valid_from"
    if problem is not None:
        raise BadRequest("ID_VALIDITY_INVALID", problem)


def id_expired(app: asyncpg.Record, today: dt.date) -> bool:
    """The card's validity ended before `today` (unknown or long-term: not expired)."""
    until: dt.date | None = app["id_valid_until"]
    return not app["id_long_term"] and until is not None and until < today


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _step(steps: list[dict[str, str]], name: str) -> list[dict[str, str]]:
    return [*steps, {"step": name, "at": now_iso()}]


async def submit(
    svc: Services, ctx: Origination, conn: asyncpg.Connection, channel: Channel, checked: Checked
) -> tuple[ApplicationView, int]:
    """Phase A; returns the view and the shard's customer key (the application ID)."""
    application_id = svc.ids.next_id(checked.logical_shard)
    index = svc.cipher.index(checked.id_number, context=ID_NUMBER)
    applicant = json.dumps(
        {
            "name": checked.body.applicant.name,
            "id_number": checked.id_number,
            "phone": checked.phone,
            "bank_card": checked.card,
        },
        ensure_ascii=False,
    )
    steps = _step([], "received")
    if checked.identity_verified:
        steps = _step(steps, "identity_verified")
    body = checked.body
    inserted = await conn.fetchval(
        """INSERT INTO application (application_id, tenant_id, channel_id, channel_serial,
               product_code, id_number_index, applicant_ciphertext, requested_amount_fen,
               requested_term_months, repayment_method, terms_version, attachments, status, steps,
               identity_verified, id_valid_from, id_valid_until, id_long_term, business_date,
               residence_region)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'received', $13::jsonb,
                   $14, $15, $16, $17, $18, $19)
           ON CONFLICT (channel_id, channel_serial) DO NOTHING
           RETURNING application_id""",
        application_id,
        channel.tenant_id,
        channel.channel_id,
        body.channel_serial,
        body.product_code,
        index,
        svc.cipher.encrypt(applicant, context=APPLICANT, row=application_id),
        checked.amount_fen,
        body.requested_term_months,
        body.repayment_method,
        body.consent.terms_version,
        list(body.attachments),
        json.dumps(steps),
        checked.identity_verified,
        body.applicant.id_valid_from,
        body.applicant.id_valid_until,
        body.applicant.id_long_term,
        svc.business_date,
        body.applicant.residence_region,
    )
    if inserted is None:
        existing = await conn.fetchval(
            "SELECT application_id FROM application WHERE channel_id = $1 AND channel_serial = $2",
            channel.channel_id,
            body.channel_serial,
        )
        raise Conflict(
            "APPLICATION_EXISTS",
            f"channel serial {body.channel_serial!r} was used by application {existing}",
        )
    # The rules that need no report first: a refusal or a white-listed approval is
    # final, and the bureau is not asked.
    verdict = await decide_application(svc, ctx, conn, application_id, None)
    if verdict.outcome == "pending_bureau":
        await _needs_report(
            svc,
            ctx,
            conn,
            channel=channel,
            checked=checked,
            application_id=application_id,
            index=index,
        )
    return await application_view(conn, channel.tenant_id, application_id), application_id


async def _needs_report(
    svc: Services,
    ctx: Origination,
    conn: asyncpg.Connection,
    *,
    channel: Channel,
    checked: Checked,
    application_id: int,
    index: bytes,
) -> None:
    """The decision depends on a report: the authorization evidenced first, then this
    member bank's valid report, or a query (outbox `bureau`, committed with the evidence)."""
    product = svc.reference.data.products[checked.body.product_code]
    facts = consent.ConsentFacts(
        application_id=application_id,
        tenant_id=channel.tenant_id,
        product_name=product.name,
        channel_id=channel.channel_id,
        channel_name=svc.reference.data.channel_name(channel.channel_id),
        applicant_name=checked.body.applicant.name,
        id_number=checked.id_number,
    )
    await consent.record(conn, facts, checked.body.consent, svc.business_date)
    report = await _valid_report(conn, index, channel.tenant_id)
    if report is not None:
        await decide_application(svc, ctx, conn, application_id, report)
        return
    await _set(conn, application_id, status="pending_bureau")
    await enqueue(
        conn,
        outbox_id=svc.ids.next_id(checked.logical_shard),
        customer_id=application_id,
        kind="bureau",
        ref_id=application_id,
        payload={"reference": f"B{application_id}"},
    )


async def _valid_report(
    conn: asyncpg.Connection, index: bytes, tenant_id: str
) -> BureauIndicators | None:
    """A report this member bank queried and may still use (another bank's is not ours:
    each queries under its own authorization, and pays for it)."""
    raw = await conn.fetchval(
        """SELECT indicators FROM bureau_report
           WHERE id_number_index = $1 AND tenant_id = $2 AND valid_until > now()
           ORDER BY fetched_at DESC LIMIT 1""",
        index,
        tenant_id,
    )
    return None if raw is None else msgspec.json.decode(raw, type=BureauIndicators)


async def store_report(
    conn: asyncpg.Connection,
    ctx: Origination,
    application_id: int,
    result: BureauResult,
    today: dt.date,
) -> BureauIndicators | None:
    """Parse and keep the bureau's answer for the applicant; None if there is none yet."""
    if result.outcome is not BureauOutcome.OK or result.raw is None:
        return None
    indicators = parse_report(result.raw, today)
    app = await conn.fetchrow(
        "SELECT id_number_index, tenant_id FROM application WHERE application_id = $1",
        application_id,
    )
    assert app is not None
    await conn.execute(
        """INSERT INTO bureau_report (id_number_index, valid_until, indicators, tenant_id,
               application_id)
           VALUES ($1, now() + make_interval(days => $2), $3::jsonb, $4, $5)""",
        app["id_number_index"],
        ctx.report_valid_days,
        msgspec.json.encode(indicators).decode(),
        app["tenant_id"],
        application_id,
    )
    return indicators


async def _facts(
    svc: Services,
    conn: asyncpg.Connection,
    app: asyncpg.Record,
    applicant: dict[str, str],
    report: BureauIndicators | None,
) -> rules.ApplicantFacts:
    today = svc.business_date
    birth = parse_id_number(applicant["id_number"], today=today).birth_date
    index = bytes(app["id_number_index"])
    white = await white_entry(conn, app["tenant_id"], index)
    customer_id = await conn.fetchval(
        "SELECT customer_id FROM customer WHERE tenant_id = $1 AND id_number_index = $2",
        app["tenant_id"],
        index,
    )
    overdue = 0
    if customer_id is not None:
        overdue = await conn.fetchval(
            """SELECT count(DISTINCT l.loan_id) FROM loan l JOIN installment i USING (loan_id)
               WHERE l.customer_id = $1 AND l.status = 'disbursed' AND i.due_date < $2
                 AND (i.principal_paid_fen < i.principal_fen
                      OR i.interest_paid_fen < i.interest_fen)""",
            customer_id,
            today,
        )
    return rules.ApplicantFacts(
        age=age_on(birth, today),
        id_valid=app["identity_verified"],
        id_expired=id_expired(app, today),
        blacklisted=await blacklisted(conn, app["tenant_id"], index),
        whitelist=None
        if white is None
        else rules.WhitelistTerms(
            limit_fen=white["limit_fen"],
            annual_rate_pct=white["annual_rate_pct"],
            repayment_methods=list(white["repayment_methods"]),
            max_term_months=white["max_term_months"],
        ),
        bureau=report,
        internal_overdue_loans=int(overdue),
        requested_amount_fen=app["requested_amount_fen"],
        requested_term_months=app["requested_term_months"],
        repayment_method=app["repayment_method"],
    )


async def decide_application(
    svc: Services,
    ctx: Origination,
    conn: asyncpg.Connection,
    application_id: int,
    report: BureauIndicators | None,
) -> rules.Decision:
    """Decide on what is known; `report` None: the rules that need no report. A
    `pending_bureau` verdict (the decision depends on the report) writes nothing."""
    app = await conn.fetchrow(
        "SELECT * FROM application WHERE application_id = $1 FOR UPDATE", application_id
    )
    assert app is not None
    if app["status"] not in ("received", "pending_bureau"):
        # Decided already (by a relay that had this row before its lease ran out, say):
        # deciding again would grant a second line. The stored decision stands.
        return msgspec.json.decode(app["decision"], type=rules.Decision)
    applicant = json.loads(
        svc.cipher.decrypt(
            bytes(app["applicant_ciphertext"]), context=APPLICANT, row=app["application_id"]
        )
    )
    facts = await _facts(svc, conn, app, applicant, report)
    product = rule_set_key(svc, ctx, app["product_code"])
    rule_set = rules.choose_rule_set(
        application_id,
        ctx.rule_sets[product][ctx.current_versions[product]],
        ctx.rule_sets[product].get(ctx.candidate_versions.get(product, "")),
        ctx.candidate_percent,
    )
    verdict = rules.decide(rule_set, facts)
    if verdict.outcome == "pending_bureau":
        return verdict
    # Every decision, whichever path made it: the gray release is compared on this.
    metrics.RULE_SET_DECISIONS.labels(
        verdict.product_code, verdict.rule_set_version, verdict.outcome
    ).inc()
    steps = json.loads(app["steps"])
    if report is not None:
        steps = _step(steps, "bureau")
    steps = _step(steps, "decided")
    await conn.execute(
        """UPDATE application SET decision = $2::jsonb, reasons = $3, rule_set_version = $4,
               steps = $5::jsonb, decided_at = clock_timestamp(), updated_at = now()
           WHERE application_id = $1""",
        application_id,
        msgspec.json.encode(verdict).decode(),
        list(verdict.reasons),
        verdict.rule_set_version,
        json.dumps(steps),
    )
    if verdict.outcome == "approved":
        await approve(svc, conn, app, applicant, verdict)
    else:
        await _set(conn, application_id, status=verdict.outcome)
    return verdict


async def approve(
    svc: Services,
    conn: asyncpg.Connection,
    app: asyncpg.Record,
    applicant: dict[str, str],
    verdict: rules.Decision,
) -> None:
    """Customer (new or existing), credit line through the same service as the API, contracts."""
    channel = Channel(app["channel_id"], app["tenant_id"], "", True)
    new = NewCustomer(
        svc,
        channel,
        CustomerCreate(
            app["tenant_id"],
            applicant["name"],
            applicant["id_number"],
            applicant["phone"],
            applicant["bank_card"],
            residence_region=app["residence_region"],
        ),
    )
    index = bytes(app["id_number_index"])
    customer_id = await conn.fetchval(
        "SELECT customer_id FROM customer WHERE tenant_id = $1 AND id_number_index = $2",
        app["tenant_id"],
        index,
    )
    if customer_id is None:
        try:
            customer_id = int((await insert_customer(svc, conn, new)).customer_id)
        except Conflict as exc:  # registered meanwhile (another application): use that one
            customer_id = int(exc.extra["customer_id"])
    assert verdict.limit_fen is not None and verdict.annual_rate_pct is not None
    line = await grant_line(
        svc,
        conn,
        channel,
        CreditLineCreate(
            customer_id=str(customer_id),
            product_code=app["product_code"],
            limit=format_fen(verdict.limit_fen),
            annual_rate_pct=format_rate_pct(Decimal(verdict.annual_rate_pct)),
            repayment_methods=list(verdict.repayment_methods),  # type: ignore[arg-type]
            max_term_months=verdict.max_term_months or 1,
            expires_on=svc.business_date + dt.timedelta(days=LINE_VALID_DAYS),
        ),
    )
    line_id = int(line.credit_line_id)
    contract_id = svc.ids.next_id(logical_shard_for_id_number(applicant["id_number"]))
    await conn.execute(
        "UPDATE credit_line SET application_id = $2 WHERE credit_line_id = $1",
        line_id,
        app["application_id"],
    )
    await create_contracts(
        conn,
        contract_id=contract_id,
        customer_id=customer_id,
        application_id=app["application_id"],
        credit_line_id=line_id,
        documents=_documents(svc, app, applicant, line=line, contract_id=contract_id),
    )
    await face_to_face.require(conn, contract_id, list(verdict.face_to_face))
    await conn.execute(
        """UPDATE application SET status = 'approved', customer_id = $2, credit_line_id = $3,
               contract_id = $4, updated_at = now() WHERE application_id = $1""",
        app["application_id"],
        customer_id,
        line_id,
        contract_id,
    )


def _documents(
    svc: Services,
    app: asyncpg.Record,
    applicant: dict[str, str],
    *,
    line: CreditLineView,
    contract_id: int,
) -> list[ContractDocument]:
    product = svc.reference.data.products[app["product_code"]]
    fields = {
        "name_masked": mask_name(applicant["name"]),
        "id_number_masked": mask_id_number(applicant["id_number"]),
        "limit": line.limit,
        "annual_rate_pct": line.annual_rate_pct,
        "max_term_months": str(line.max_term_months),
        "repayment_methods": "、".join(line.repayment_methods),
        "product_name": product.name,
        "tenant_name": app["tenant_id"],
        "contract_id": str(contract_id),
        "date": svc.business_date.isoformat(),
    }
    templates = {
        "loan_contract": evidence.LOAN_CONTRACT_TEMPLATE,
        "credit_authorization": evidence.CREDIT_AUTHORIZATION_TEMPLATE,
    }
    documents = []
    for kind, template in templates.items():
        wanted = evidence.template_placeholders(template)
        used = {key: value for key, value in fields.items() if key in wanted}
        documents.append(ContractDocument(kind, evidence.render_contract(template, used)))
    return documents


async def approve_reviewed(svc: Services, conn: asyncpg.Connection, app: asyncpg.Record) -> None:
    """An operator approved a pre-approved application: grant what the rules pre-approved."""
    verdict = msgspec.json.decode(app["decision"], type=rules.Decision)
    applicant = json.loads(
        svc.cipher.decrypt(
            bytes(app["applicant_ciphertext"]), context=APPLICANT, row=app["application_id"]
        )
    )
    await approve(svc, conn, app, applicant, verdict)


async def _set(conn: asyncpg.Connection, application_id: int, *, status: str) -> None:
    await conn.execute(
        "UPDATE application SET status = $2, updated_at = now() WHERE application_id = $1",
        application_id,
        status,
    )


async def application_view(
    conn: asyncpg.Connection, tenant_id: str, application_id: int
) -> ApplicationView:
    row = await conn.fetchrow("SELECT * FROM application WHERE application_id = $1", application_id)
    if row is None or row["tenant_id"] != tenant_id:
        raise NotFound("APPLICATION_NOT_FOUND", f"no application {application_id}")
    return view_of(row)


def view_of(row: asyncpg.Record) -> ApplicationView:
    decision = None
    if row["decision"] is not None:
        made = msgspec.json.decode(row["decision"], type=rules.Decision)
        decision = DecisionView(
            limit=None if made.limit_fen is None else format_fen(made.limit_fen),
            annual_rate_pct=made.annual_rate_pct,
            repayment_methods=list(made.repayment_methods),
            max_term_months=made.max_term_months,
            reasons=list(row["reasons"]),
            rule_set_version=made.rule_set_version,
            face_to_face_required=bool(made.face_to_face)
            and row["status"] in ("pending_review", "approved"),
        )
    return ApplicationView(
        application_id=str(row["application_id"]),
        status=row["status"],
        channel_serial=row["channel_serial"],
        product_code=row["product_code"],
        decision=decision,
        customer_id=None if row["customer_id"] is None else str(row["customer_id"]),
        credit_line_id=None if row["credit_line_id"] is None else str(row["credit_line_id"]),
        contract_id=None if row["contract_id"] is None else str(row["contract_id"]),
        steps=[
            Step(s["step"], dt.datetime.fromisoformat(s["at"])) for s in json.loads(row["steps"])
        ],
    )


async def request_manual_review(
    svc: Services, ctx: Origination, conn: asyncpg.Connection, tenant_id: str, application_id: int
) -> ApplicationView:
    """An automatic decision always leaves a path to a person (issue 19): the applicant
    may have an automatic refusal reviewed by a loan officer, once. A hard refusal (black
    list, age, identity, overdue with us) is final, and an officer's own rejection too:
    422 MANUAL_REVIEW_NOT_AVAILABLE."""
    app = await conn.fetchrow(
        "SELECT * FROM application WHERE application_id = $1 FOR UPDATE", application_id
    )
    if app is None or app["tenant_id"] != tenant_id:
        raise NotFound("APPLICATION_NOT_FOUND", f"no application {application_id}")
    refusal = "only an automatic refusal can be sent to manual review"
    if app["status"] != "refused" or app["decision"] is None:
        raise Unprocessable("MANUAL_REVIEW_NOT_AVAILABLE", f"{refusal}: it is {app['status']}")
    if app["manual_review_requested_at"] is not None or "OPERATOR_REJECTED" in app["reasons"]:
        raise Unprocessable(
            "MANUAL_REVIEW_NOT_AVAILABLE", f"{refusal}: an officer has decided this one"
        )
    refused = msgspec.json.decode(app["decision"], type=rules.Decision)
    versions = ctx.rule_sets.get(rule_set_key(svc, ctx, app["product_code"]), {})
    rule_set = versions.get(refused.rule_set_version)
    if rule_set is None or rules.hard_refusal(rule_set, refused):
        raise Unprocessable(
            "MANUAL_REVIEW_NOT_AVAILABLE",
            f"{refusal}: this one was refused by a rule no officer may override",
        )
    queued = rules.manual_review_terms(rule_set, refused, app["requested_amount_fen"])
    steps = _step(json.loads(app["steps"]), "manual_review_requested")
    await conn.execute(
        """UPDATE application SET status = 'pending_review', decision = $2::jsonb,
               reasons = $3, steps = $4::jsonb, manual_review_requested_at = now(),
               updated_at = now()
           WHERE application_id = $1""",
        application_id,
        msgspec.json.encode(queued).decode(),
        list(queued.reasons),
        json.dumps(steps),
    )
    return await application_view(conn, tenant_id, application_id)

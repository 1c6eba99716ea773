"""Operator endpoints of their own: logging in and out, managing operators, a channel's
secret, rule-set and white-list imports, reading the audit trail. Every one is in
`operator_auth.OPERATOR_ROUTES` with the permission it needs; changes to the control
database append their audit entry in their own transaction (`AUDITED`)."""

from __future__ import annotations

import csv
import datetime as dt
import re
from typing import Any, Literal

import asyncpg
from aiohttp import web

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import BadRequest, Conflict, NotFound, Unprocessable
from engine.contract.messages import (
    AuditEntryView,
    AuditPage,
    ChannelSecretView,
    OperatorCreate,
    OperatorList,
    OperatorLogin,
    OperatorPassword,
    OperatorRoles,
    OperatorSessionView,
    OperatorView,
    RuleSetImported,
    SessionEnded,
    StatusChange,
    WhitelistImported,
)
from engine.http import keys as app_keys
from engine.http.auth import BODY
from engine.http.operator_auth import AUDIT_CHANGE, AUDITED, AuditChange, operator_of
from engine.operators import accounts, audit, passwords
from engine.operators.principal import Principal
from engine.origination import decision, lists
from engine.origination.setup import RuleSetExists, rulesets_directory, save_rule_set
from engine.stores import control_admin
from engine.stores.shards import acquire

_CHANNEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_QUERY_WORD = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ACCOUNT_ACTIONS = {
    "roles": "operator.roles",
    "disable": "operator.disable",
    "enable": "operator.enable",
    "unlock": "operator.unlock",
    "password": "operator.password",
}


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[app_keys.CONTROL_POOL]


def _request_id(request: web.Request) -> str:
    return str(request.get("request_id", ""))


def _operator_view(view: dict[str, Any]) -> OperatorView:
    return OperatorView(**view)


def _hasher(request: web.Request) -> Any:
    return accounts.hasher_of(request.app[app_keys.SETTINGS].operators)


async def login(request: web.Request) -> web.Response:
    body = decode(request[BODY], OperatorLogin)
    settings = request.app[app_keys.SETTINGS].operators
    result = await accounts.login(
        _pool(request), _hasher(request), settings, body.login, body.password,
        _request_id(request),
    )  # fmt: skip
    request[AUDITED] = True  # the refusal too: its count and entry are committed
    if isinstance(result, Exception):
        raise result
    operator = _operator_view(accounts.view_of_principal(result.principal))
    view = OperatorSessionView(result.token, result.expires_at, operator)
    return json_response(encode(view))


async def logout(request: web.Request) -> web.Response:
    who = operator_of(request)
    async with acquire(_pool(request)) as conn, conn.transaction():
        await accounts.logout(conn, who, _request_id(request))
    request[AUDITED] = True
    return json_response(encode(SessionEnded(ended=True)))


async def me(request: web.Request) -> web.Response:
    who = operator_of(request)
    row = await _pool(request).fetchrow(
        "SELECT * FROM operator WHERE operator_id = $1", who.operator_id
    )
    if row is None:  # the dev token's operator has no row
        view = OperatorView(who.operator_id, who.tenant_id, who.login, sorted(who.roles), "active")
    else:
        view = _operator_view(accounts.view_of(row))
    return json_response(encode(view))


async def list_operators(request: web.Request) -> web.Response:
    async with acquire(_pool(request)) as conn:
        views = await accounts.listing(conn, operator_of(request))
    return json_response(encode(OperatorList([_operator_view(v) for v in views])))


def _password_ok(password: str, login_name: str) -> None:
    try:
        passwords.check_rules(password, login_name)
    except passwords.PasswordRuleError as exc:
        raise Unprocessable("OPERATOR_PASSWORD_WEAK", str(exc)) from None


async def create_operator(request: web.Request) -> web.Response:
    who = operator_of(request)
    body = decode(request[BODY], OperatorCreate)
    _password_ok(body.password, body.login)
    accounts.check_roles(who, list(body.roles))  # before the hashing's cost
    password_hash = await accounts.hash_password(_hasher(request), body.password)
    async with acquire(_pool(request)) as conn, conn.transaction():
        view = await accounts.create(
            conn, who, tenant_id=body.tenant_id, login_name=body.login,
            password_hash=password_hash, roles=list(body.roles), request_id=_request_id(request),
        )  # fmt: skip
    request[AUDITED] = True
    return json_response(encode(_operator_view(view)), status=201)


async def change_operator(request: web.Request) -> web.Response:
    who = operator_of(request)
    operator_id = request.match_info["operator_id"]
    if re.fullmatch(accounts.OPERATOR_ID_PATTERN, operator_id) is None:
        raise NotFound("OPERATOR_NOT_FOUND", "no such operator")
    verb = request.path.rsplit("/", 1)[1]
    action = _ACCOUNT_ACTIONS[verb]
    kwargs: dict[str, Any] = {"request_id": _request_id(request)}
    if verb == "roles":
        kwargs["roles"] = list(decode(request[BODY], OperatorRoles).roles)
    elif verb == "password":
        password = decode(request[BODY], OperatorPassword).password
        _password_ok(password, "")
        kwargs["password_hash"] = await accounts.hash_password(_hasher(request), password)
    elif verb in ("disable", "enable"):
        kwargs["reason"] = decode(request[BODY], StatusChange).reason
    async with acquire(_pool(request)) as conn, conn.transaction():
        view = await accounts.change(conn, who, operator_id, action, **kwargs)
    request[AUDITED] = True
    return json_response(encode(_operator_view(view)))


async def rotate_channel_secret(request: web.Request) -> web.Response:
    """A new secret for one of the operator's bank's channels (the CLI's `channels rotate`),
    shown once; the old one stops working within reference_refresh_s."""
    who = operator_of(request)
    channel_id = request.match_info["channel_id"]
    if _CHANNEL_ID.fullmatch(channel_id) is None:
        raise NotFound("CHANNEL_NOT_FOUND", "no such channel")
    cipher = request.app[app_keys.PII]
    async with acquire(_pool(request)) as conn, conn.transaction():
        tenant = await conn.fetchval(
            "SELECT tenant_id FROM channel WHERE channel_id = $1 FOR UPDATE", channel_id
        )
        if tenant is None or not who.sees(tenant):  # another bank's: not found
            raise NotFound("CHANNEL_NOT_FOUND", f"no channel {channel_id}")
        secret = control_admin.new_secret()
        await control_admin.rotate_channel(conn, cipher, channel_id, secret)
        entry = audit.event(
            who, "channel.rotate_secret", f"channel:{channel_id}",
            after={"tenant_id": tenant, "secret": "rotated"}, request_id=_request_id(request),
        )  # fmt: skip
        await audit.append(conn, entry)
    request[AUDITED] = True
    return json_response(encode(ChannelSecretView(channel_id, secret)))


async def import_rule_set(request: web.Request) -> web.Response:
    """Store a rule set (the loader's checks, whole or nothing); engines load it at their
    next start. A stored version is never rewritten."""
    directory = rulesets_directory(request.app[app_keys.SETTINGS].origination)
    try:
        rule_set, new = save_rule_set(directory, request[BODY])
    except decision.RuleSetError as exc:
        raise BadRequest("RULESET_INVALID", "; ".join(exc.problems)[:2000]) from None
    except RuleSetExists as exc:
        raise Conflict("RULESET_VERSION_EXISTS", f"{exc}: import it as a new version") from None
    status: Literal["stored", "unchanged"] = "stored" if new else "unchanged"
    request[AUDIT_CHANGE] = AuditChange(
        f"ruleset:{rule_set.product_code}/{rule_set.version}", after={"status": status}
    )
    note = "the engine loads it at its next start; make it current or candidate in settings"
    return json_response(
        encode(RuleSetImported(rule_set.product_code, rule_set.version, status, note))
    )


async def import_whitelist(request: web.Request) -> web.Response:
    """The CLI's `whitelist import`, with the CSV as the body: checked whole, every row of
    the operator's own bank (a union_admin: any bank), then stored."""
    who = operator_of(request)
    try:
        text = request[BODY].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("LIST_FILE_INVALID", "the body is not UTF-8 CSV") from None
    svc = request.app[app_keys.SERVICES]
    try:
        entries = lists.read_white_list(text, dt.date.today())
    except lists.ListFileError as exc:
        raise BadRequest("LIST_FILE_INVALID", "; ".join(exc.problems[:20])) from None
    except csv.Error as exc:  # a NUL byte, a runaway field
        raise BadRequest("LIST_FILE_INVALID", f"not a CSV file: {exc}") from None
    foreign = [
        n + 2
        for n, e in enumerate(entries)
        if _TENANT_ID.fullmatch(e.tenant_id) is None or not who.sees(e.tenant_id)
    ]
    if foreign:
        lines = ", ".join(str(n) for n in foreign[:20])
        raise BadRequest("LIST_FILE_INVALID", f"lines {lines}: not your member bank's tenant_id")
    count = await lists.store_white_list(svc.pools, request.app[app_keys.PII], entries)
    tenants = sorted({e.tenant_id for e in entries})
    request[AUDIT_CHANGE] = AuditChange(
        "whitelist", after={"imported": count, "tenants": tenants[:20]}
    )
    return json_response(encode(WhitelistImported(count)))


def _moment(request: web.Request, name: str) -> dt.datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except (ValueError, OverflowError):
        raise BadRequest("QUERY_INVALID", f"{name} is an ISO date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def read_audit(request: web.Request) -> web.Response:
    """The audit trail, oldest first, a bounded page at a time (auditors only). An
    auditor of a member bank reads its own operators' entries; the union's, all."""
    who: Principal = operator_of(request)
    page_max = request.app[app_keys.SETTINGS].operators.audit_page_max
    query = request.query
    try:
        limit = int(query.get("limit", "100"))
        after_seq = int(query.get("after_seq", "0"))
    except ValueError:
        raise BadRequest("LIMIT_INVALID", f"limit is 1..{page_max}, after_seq >= 0") from None
    if not 1 <= limit <= page_max or not 0 <= after_seq < 2**63:
        raise BadRequest("LIMIT_INVALID", f"limit is 1..{page_max}, after_seq >= 0")
    for name in ("operator", "action"):
        if _QUERY_WORD.fullmatch(query.get(name, "x")) is None:
            raise BadRequest("QUERY_INVALID", f"{name} is 1..64 of [A-Za-z0-9._:-]")
    async with acquire(_pool(request)) as conn:
        rows = await audit.page(
            conn, since=_moment(request, "from"), until=_moment(request, "to"),
            operator=query.get("operator") or None, action=query.get("action") or None,
            tenant=who.scope, after_seq=after_seq, limit=limit,
        )  # fmt: skip
    entries = []
    for row in rows:
        e = audit.event_of(row)
        entries.append(
            AuditEntryView(
                seq=row["seq"], at=row["at"], operator_id=e.operator_id,
                operator_login=e.operator_login, tenant_id=e.tenant_id, action=e.action,
                target=e.target, before=e.before, after=e.after, outcome=e.outcome,
                code=e.code, request_id=e.request_id, hash=bytes(row["hash"]).hex(),
            )
        )  # fmt: skip
    more = len(rows) == limit
    return json_response(encode(AuditPage(entries, rows[-1]["seq"] if more else None)))


def setup_operator_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/v1/operator/login", login)
    add("POST", "/v1/operator/logout", logout)
    add("GET", "/v1/operator/me", me)
    add("GET", "/v1/admin/operators", list_operators)
    add("POST", "/v1/admin/operators", create_operator)
    for verb in _ACCOUNT_ACTIONS:
        add("POST", f"/v1/admin/operators/{{operator_id}}/{verb}", change_operator)
    add("POST", "/v1/admin/channels/{channel_id}/rotate-secret", rotate_channel_secret)
    add("POST", "/v1/admin/rulesets", import_rule_set)
    add("POST", "/v1/admin/whitelist", import_whitelist)
    add("GET", "/v1/audit", read_audit)

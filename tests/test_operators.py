"""Operators through the API: logging in, the lockout, a session's expiry and its end;
a member bank's operators confined to their bank (another bank's ids answer 404, and
nothing changes); the admin routes (operators, channel secrets, imports, the audit read);
each refusal with its code and its audit entry."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from engine.contract.errors import Unauthorized
from engine.http import keys as app_keys
from engine.http.operator_auth import authenticate_operator
from engine.origination.decision import RULESETS_DIRECTORY
from engine.settings import Settings
from tests.api_client import ApiClient
from tests.conftest import EngineProcess, run_cli
from tests.operator_helpers import (
    BANK_B,
    DEV,
    PASSWORD,
    audit_head,
    audit_rows,
    ensure_bank_b,
    log_in,
    make_operator,
    token_of,
)
from tests.origination_helpers import application, apply, approved_after_review, born


@pytest.fixture(scope="module")
async def bank_b(control_conn: asyncpg.Connection) -> AsyncIterator[str]:
    await ensure_bank_b(control_conn)
    yield BANK_B


async def test_login_lockout_unlock(api: ApiClient, control_conn: asyncpg.Connection) -> None:
    operator = await make_operator(api, "demo", "approver")
    login = operator["login"]
    since = await audit_head(control_conn)
    for _ in range(4):
        wrong = await log_in(api, login, "not-the-password-1")
        assert (wrong.status, wrong.json["code"]) == (401, "AUTH_OPERATOR_BAD_CREDENTIALS")
    fifth = await log_in(api, login, "not-the-password-1")
    assert (fifth.status, fifth.json["code"]) == (401, "AUTH_OPERATOR_LOCKED")
    # Locked: even the right password is refused, and nothing is issued.
    right = await log_in(api, login)
    assert (right.status, right.json["code"]) == (401, "AUTH_OPERATOR_LOCKED")
    sessions = await control_conn.fetchval(
        "SELECT count(*) FROM operator_session WHERE operator_id = $1", operator["operator_id"]
    )
    assert sessions == 0
    refused = await audit_rows(control_conn, since, action="operator.login", outcome="refused")
    mine = [r for r in refused if r["operator_id"] == operator["operator_id"]]
    assert [r["code"] for r in mine] == ["AUTH_OPERATOR_BAD_CREDENTIALS"] * 4 + [
        "AUTH_OPERATOR_LOCKED"
    ] * 2
    # No password in the trail, ever.
    text = str([dict(r) for r in await audit_rows(control_conn, since)])
    assert "not-the-password-1" not in text and PASSWORD not in text
    # An admin of the bank unlocks it (a bank_admin of another bank cannot see it).
    admin = await token_of(api, await make_operator(api, "demo", "bank_admin"))
    unlocked = await api.post(
        f"/v1/admin/operators/{operator['operator_id']}/unlock", headers=admin, sign=False
    )
    assert unlocked.status == 200 and unlocked.json["locked_until"] is None, unlocked
    assert (await log_in(api, login)).status == 200


async def test_unknown_login_answers_like_a_wrong_password(
    api: ApiClient, control_conn: asyncpg.Connection
) -> None:
    since = await audit_head(control_conn)
    ghost = f"ghost-{secrets.token_hex(4)}"
    reply = await log_in(api, ghost, "whatever-it-is-1")
    assert (reply.status, reply.json["code"]) == (401, "AUTH_OPERATOR_BAD_CREDENTIALS")
    [entry] = await audit_rows(control_conn, since, target=f"login:{ghost}")
    assert (entry["outcome"], entry["operator_id"]) == ("refused", "")


async def test_session_expiry_and_logout(api: ApiClient, control_conn: asyncpg.Connection) -> None:
    operator = await make_operator(api, "demo", "officer")
    logged = await log_in(api, operator["login"])
    assert logged.status == 200, logged
    token = logged.json["token"]
    expires = dt.datetime.fromisoformat(logged.json["expires_at"])
    assert dt.timedelta(minutes=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=30)
    headers = {"X-Operator-Token": token}
    me = await api.get("/v1/operator/me", headers=headers, sign=False)
    assert me.status == 200 and me.json["roles"] == ["officer"], me
    # Only the token's hash is stored.
    stored = await control_conn.fetchval(
        "SELECT count(*) FROM operator_session WHERE token_sha256 = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    assert stored == 1
    # Expired: refused with its own code.
    await control_conn.execute(
        "UPDATE operator_session SET expires_at = now() - interval '1 second' "
        "WHERE token_sha256 = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    since = await audit_head(control_conn)
    expired = await api.get("/v1/collection-queue", headers=headers, sign=False)
    assert (expired.status, expired.json["code"]) == (401, "AUTH_OPERATOR_TOKEN_EXPIRED")
    [entry] = await audit_rows(control_conn, since, code="AUTH_OPERATOR_TOKEN_EXPIRED")
    assert entry["action"] == "collection.read"
    # Logout revokes; the token is refused after.
    second = {"X-Operator-Token": (await log_in(api, operator["login"])).json["token"]}
    out = await api.post("/v1/operator/logout", headers=second, sign=False)
    assert out.status == 200, out
    after = await api.get("/v1/collection-queue", headers=second, sign=False)
    assert (after.status, after.json["code"]) == (401, "AUTH_OPERATOR_TOKEN_REVOKED")
    junk = await api.get("/v1/collection-queue", headers={"X-Operator-Token": "x" * 43},
                         sign=False)  # fmt: skip
    assert (junk.status, junk.json["code"]) == (401, "AUTH_OPERATOR_UNKNOWN")


async def test_disable_ends_sessions_and_logins(api: ApiClient) -> None:
    operator = await make_operator(api, "demo", "officer")
    headers = await token_of(api, operator)
    admin = await token_of(api, await make_operator(api, "demo", "bank_admin"))
    done = await api.post(f"/v1/admin/operators/{operator['operator_id']}/disable",
                          {"reason": "left the bank"}, headers=admin, sign=False)  # fmt: skip
    assert done.status == 200 and done.json["status"] == "disabled", done
    gone = await api.get("/v1/collection-queue", headers=headers, sign=False)
    assert (gone.status, gone.json["code"]) == (401, "AUTH_OPERATOR_TOKEN_REVOKED")
    again = await log_in(api, operator["login"])
    assert (again.status, again.json["code"]) == (401, "AUTH_OPERATOR_DISABLED")
    # An admin cannot disable themselves (and so lock the bank out by mistake).
    me = (await api.get("/v1/operator/me", headers=admin, sign=False)).json["operator_id"]
    self_ = await api.post(f"/v1/admin/operators/{me}/disable", {"reason": "oops"},
                           headers=admin, sign=False)  # fmt: skip
    assert (self_.status, self_.json["code"]) == (422, "OPERATOR_SELF")


async def test_password_reset_and_rules(api: ApiClient) -> None:
    operator = await make_operator(api, "demo", "officer")
    old = await token_of(api, operator)
    admin = await token_of(api, await make_operator(api, "demo", "bank_admin"))
    path = f"/v1/admin/operators/{operator['operator_id']}/password"
    weak = await api.post(path, {"password": "short"}, headers=admin, sign=False)
    assert (weak.status, weak.json["code"]) == (400, "VALIDATION_FAILED")
    new_password = "another-long-secret-7"
    reset = await api.post(path, {"password": new_password}, headers=admin, sign=False)
    assert reset.status == 200, reset
    assert (await api.get("/v1/operator/me", headers=old, sign=False)).status == 401
    assert (await log_in(api, operator["login"])).status == 401
    assert (await log_in(api, operator["login"], new_password)).status == 200
    with_login = await api.post("/v1/admin/operators", {
        "tenant_id": "demo", "login": "named-one", "password": "xx-named-one-xx",
        "roles": ["officer"]}, headers=admin, sign=False)  # fmt: skip
    assert (with_login.status, with_login.json["code"]) == (422, "OPERATOR_PASSWORD_WEAK")


async def test_bank_b_cannot_see_or_move_bank_a(
    api: ApiClient, control_conn: asyncpg.Connection, bank_b: str
) -> None:
    # An application of the demo bank, waiting for review.
    reply = await apply(api, application(born(1991)))
    assert reply.json["status"] == "pending_review", reply
    application_id = reply.json["application_id"]
    b_approver = await token_of(api, await make_operator(api, bank_b, "approver"))
    a_approver = await token_of(api, await make_operator(api, "demo", "approver"))

    queue_b = await api.get("/v1/review-queue", headers=b_approver, sign=False)
    assert queue_b.status == 200
    assert application_id not in {a["application_id"] for a in queue_b.json["applications"]}
    since = await audit_head(control_conn)
    approve = await api.post(f"/v1/applications/{application_id}/approve",
                             {"reason": "not mine"}, headers=b_approver, sign=False)  # fmt: skip
    assert (approve.status, approve.json["code"]) == (404, "APPLICATION_NOT_FOUND")
    [entry] = await audit_rows(control_conn, since, action="application.approve")
    assert (entry["outcome"], entry["code"]) == ("refused", "APPLICATION_NOT_FOUND")
    still = await api.get(f"/v1/applications/{application_id}")
    assert still.json["status"] == "pending_review"

    # The demo bank's approver sees it and decides it.
    queue_a = await api.get("/v1/review-queue", headers=a_approver, sign=False)
    assert application_id in {a["application_id"] for a in queue_a.json["applications"]}
    done = await api.post(f"/v1/applications/{application_id}/reject", {"reason": "checked"},
                          headers=a_approver, sign=False)  # fmt: skip
    assert done.status == 200 and done.json["status"] == "refused", done
    [ok] = await audit_rows(control_conn, since, action="application.reject")
    assert ok["outcome"] == "ok" and ok["after"] is not None and "refused" in ok["after"]

    # A line of the demo bank: bank B can neither freeze it nor read its contract.
    approved = await approved_after_review(api)
    line = approved["credit_line_id"]
    freeze = await api.post(f"/v1/operator/credit-lines/{line}/freeze", {"reason": "x"},
                            headers=b_approver, sign=False)  # fmt: skip
    assert (freeze.status, freeze.json["code"]) == (404, "CREDIT_LINE_NOT_FOUND")
    assert (await api.get(f"/v1/credit-lines/{line}")).json["status"] == "active"
    contract = approved.get("contract_id")
    if contract:
        read = await api.get(f"/v1/contracts/{contract}", headers=b_approver, sign=False)
        assert (read.status, read.json["code"]) == (404, "CONTRACT_NOT_FOUND")
        mine = await api.get(f"/v1/contracts/{contract}", headers=a_approver, sign=False)
        assert mine.status == 200
    frozen = await api.post(f"/v1/operator/credit-lines/{line}/freeze", {"reason": "risk"},
                            headers=a_approver, sign=False)  # fmt: skip
    assert frozen.status == 200 and frozen.json["status"] == "frozen", frozen


async def test_bank_admins_stay_in_their_bank(
    api: ApiClient, engine: EngineProcess, control_conn: asyncpg.Connection, bank_b: str
) -> None:
    b_admin = await token_of(api, await make_operator(api, bank_b, "bank_admin"))
    a_operator = await make_operator(api, "demo", "officer")
    listing = await api.get("/v1/admin/operators", headers=b_admin, sign=False)
    assert listing.status == 200
    assert {o["tenant_id"] for o in listing.json["operators"]} == {bank_b}
    foreign = await api.post(f"/v1/admin/operators/{a_operator['operator_id']}/roles",
                             {"roles": ["approver"]}, headers=b_admin, sign=False)  # fmt: skip
    assert (foreign.status, foreign.json["code"]) == (404, "OPERATOR_NOT_FOUND")
    elsewhere = await api.post("/v1/admin/operators", {
        "tenant_id": "demo", "login": f"x-{secrets.token_hex(4)}", "password": PASSWORD,
        "roles": ["officer"]}, headers=b_admin, sign=False)  # fmt: skip
    assert (elsewhere.status, elsewhere.json["code"]) == (404, "TENANT_NOT_FOUND")
    union = await api.post("/v1/admin/operators", {
        "tenant_id": bank_b, "login": f"x-{secrets.token_hex(4)}", "password": PASSWORD,
        "roles": ["union_admin"]}, headers=b_admin, sign=False)  # fmt: skip
    assert (union.status, union.json["code"]) == (403, "OPERATOR_FORBIDDEN")
    # The demo channel's secret is not bank B's to rotate; its own channel's is.
    since = await audit_head(control_conn)
    demo = await api.post("/v1/admin/channels/demo/rotate-secret", headers=b_admin, sign=False)
    assert (demo.status, demo.json["code"]) == (404, "CHANNEL_NOT_FOUND")
    [entry] = await audit_rows(control_conn, since, action="channel.rotate_secret")
    assert (entry["outcome"], entry["code"]) == ("refused", "CHANNEL_NOT_FOUND")
    channel = f"b-app-{secrets.token_hex(3)}"
    added = run_cli("channels", "add", channel, "--tenant", bank_b, env=engine.env)
    assert added.returncode == 0, added.stderr
    rotated = await api.post(f"/v1/admin/channels/{channel}/rotate-secret", headers=b_admin,
                             sign=False)  # fmt: skip
    assert rotated.status == 200 and len(rotated.json["secret"]) >= 32, rotated
    entries = await audit_rows(control_conn, since, target=f"channel:{channel}")
    assert [e["action"] for e in entries] == ["channel.add", "channel.rotate_secret"]
    assert rotated.json["secret"] not in str([dict(e) for e in entries])


async def test_whitelist_import_of_own_bank_only(api: ApiClient, bank_b: str) -> None:
    b_admin = await token_of(api, await make_operator(api, bank_b, "bank_admin"))
    header = "tenant_id,id_number,limit,annual_rate_pct,repayment_methods,max_term_months\n"
    theirs = header + f"demo,{born(1980)},50000.00,5.40,equal_installment,24\n"
    refused = await api.post("/v1/admin/whitelist", raw=theirs.encode(), headers=b_admin,
                             sign=False)  # fmt: skip
    assert (refused.status, refused.json["code"]) == (400, "LIST_FILE_INVALID"), refused
    bad = await api.post("/v1/admin/whitelist", raw=(header + "x,y\n").encode(),
                         headers=b_admin, sign=False)  # fmt: skip
    assert (bad.status, bad.json["code"]) == (400, "LIST_FILE_INVALID")
    ours = header + f"{bank_b},{born(1980)},50000.00,5.40,equal_installment,24\n"
    done = await api.post("/v1/admin/whitelist", raw=ours.encode(), headers=b_admin, sign=False)
    assert done.status == 200 and done.json["imported"] == 1, done


async def test_rule_set_import_checks_and_never_rewrites(api: ApiClient) -> None:
    union = await token_of(api, await make_operator(api, "demo", "union_admin"))
    stored = (RULESETS_DIRECTORY / "demo-consumer" / "v1.json").read_bytes()
    same = await api.post("/v1/admin/rulesets", raw=stored, headers=union, sign=False)
    assert same.status == 200 and same.json["status"] == "unchanged", same
    changed = stored.replace(b"}", b" }", 1)
    conflict = await api.post("/v1/admin/rulesets", raw=changed, headers=union, sign=False)
    assert (conflict.status, conflict.json["code"]) == (409, "RULESET_VERSION_EXISTS")
    invalid = await api.post("/v1/admin/rulesets", raw=b'{"rules": []}', headers=union,
                             sign=False)  # fmt: skip
    assert (invalid.status, invalid.json["code"]) == (400, "RULESET_INVALID")


async def test_audit_read_is_bounded_and_scoped(api: ApiClient, bank_b: str) -> None:
    auditor = await token_of(api, await make_operator(api, "demo", "auditor"))
    page = await api.get("/v1/audit?limit=5&action=operator.login", headers=auditor, sign=False)
    assert page.status == 200 and 1 <= len(page.json["entries"]) <= 5, page
    assert {e["action"] for e in page.json["entries"]} == {"operator.login"}
    too_many = await api.get("/v1/audit?limit=100000", headers=auditor, sign=False)
    assert (too_many.status, too_many.json["code"]) == (400, "LIMIT_INVALID")
    bad_time = await api.get("/v1/audit?from=yesterday", headers=auditor, sign=False)
    assert (bad_time.status, bad_time.json["code"]) == (400, "QUERY_INVALID")
    b_auditor = await token_of(api, await make_operator(api, bank_b, "auditor"))
    b_page = await api.get("/v1/audit?limit=500", headers=b_auditor, sign=False)
    assert b_page.status == 200
    assert {e["tenant_id"] for e in b_page.json["entries"]} <= {bank_b}
    # An approver reads no audit trail (separation of duties).
    approver = await token_of(api, await make_operator(api, "demo", "approver"))
    refused = await api.get("/v1/audit", headers=approver, sign=False)
    assert (refused.status, refused.json["code"]) == (403, "OPERATOR_FORBIDDEN")


async def test_production_refuses_the_dev_token(settings: Settings) -> None:
    import msgspec

    app = web.Application()
    app[app_keys.SETTINGS] = msgspec.structs.replace(settings, env="prod")
    pool = await asyncpg.create_pool(settings.control_dsn, min_size=1, max_size=1)
    app[app_keys.CONTROL_POOL] = pool
    try:
        request = make_mocked_request("GET", "/v1/review-queue", headers=DEV, app=app)
        with pytest.raises(Unauthorized) as refused:
            await authenticate_operator(request)
        assert refused.value.code == "AUTH_OPERATOR_UNKNOWN"
        test_app = web.Application()
        test_app[app_keys.SETTINGS] = settings
        test_app[app_keys.CONTROL_POOL] = pool
        request = make_mocked_request("GET", "/v1/review-queue", headers=DEV, app=test_app)
        assert (await authenticate_operator(request)).operator_id == "dev-operator"
    finally:
        await pool.close()


async def test_cli_bootstraps_an_admin(
    api: ApiClient, engine: EngineProcess, control_conn: asyncpg.Connection, bank_b: str
) -> None:
    login = f"b-admin-{secrets.token_hex(3)}"
    weak = run_cli("operators", "create", "--tenant", bank_b, "--login", login,
                   "--role", "bank_admin", env=engine.env | {"ENGINE_OPERATOR_PASSWORD": "short"})  # fmt: skip
    assert weak.returncode == 1 and "12..128" in weak.stderr
    since = await audit_head(control_conn)
    made = run_cli("operators", "create", "--tenant", bank_b, "--login", login,
                   "--role", "bank_admin", env=engine.env | {"ENGINE_OPERATOR_PASSWORD": PASSWORD})  # fmt: skip
    assert made.returncode == 0, made.stderr
    [entry] = await audit_rows(control_conn, since, action="operator.create")
    assert entry["operator_id"] == "cli" and entry["operator_login"].startswith("cli:")
    listed = run_cli("operators", "list", "--tenant", bank_b, env=engine.env)
    assert login in listed.stdout and "bank_admin" in listed.stdout
    logged = await log_in(api, login)
    assert logged.status == 200 and logged.json["operator"]["tenant_id"] == bank_b, logged
    assert run_cli("operators", "unlock", "nobody-at-all", env=engine.env).returncode == 1

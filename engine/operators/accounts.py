"""Operator accounts, logins and sessions in the control database.

Every change runs in the caller's transaction and appends its audit entry there (the
change and its record commit together). Checks that refuse raise the API's errors; the
HTTP layer records the refusal (`engine.http.operator_auth`).

    login     unknown login or wrong password: AUTH_OPERATOR_BAD_CREDENTIALS; the
              `lockout_failures`-th wrong one in a row locks the account for `lockout_s`
              (AUTH_OPERATOR_LOCKED until then, or until an admin unlocks it)
    session   a random token, shown once; only its SHA-256 is stored, with its expiry
              (`session_ttl_s`); logging out, a disable or a password reset revokes it
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
from typing import Any, Final

import asyncpg
import msgspec
from argon2 import PasswordHasher

from engine.contract.errors import ApiError, Forbidden, NotFound, Unauthorized, Unprocessable
from engine.operators import audit, passwords
from engine.operators.principal import Principal
from engine.operators.roles import ROLES, UNION_ONLY_ROLES
from engine.settings import OperatorSettings
from engine.stores.shards import acquire

LOGIN_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{2,63}$"
OPERATOR_ID_PATTERN: Final = r"^op_[0-9a-f]{16}$"
_BAD_CREDENTIALS: Final = "wrong login or password"


class Session(msgspec.Struct, frozen=True):
    token: str
    expires_at: dt.datetime
    principal: Principal


def hasher_of(settings: OperatorSettings) -> PasswordHasher:
    return passwords.hasher(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )


async def hash_password(ph: PasswordHasher, password: str) -> str:
    return await asyncio.to_thread(ph.hash, password)


def token_sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def principal_of(row: asyncpg.Record, session: bytes | None = None) -> Principal:
    return Principal(
        operator_id=row["operator_id"],
        tenant_id=row["tenant_id"],
        roles=frozenset(row["roles"]),
        login=row["login"],
        session=session,
    )


def view_of_principal(who: Principal) -> dict[str, Any]:
    return {
        "operator_id": who.operator_id,
        "tenant_id": who.tenant_id,
        "login": who.login,
        "roles": sorted(who.roles),
        "status": "active",
        "locked_until": None,
    }


def view_of(row: asyncpg.Record) -> dict[str, Any]:
    """An operator as answers and audit entries show them (never the hash)."""
    locked = row["locked_until"]
    return {
        "operator_id": row["operator_id"],
        "tenant_id": row["tenant_id"],
        "login": row["login"],
        "roles": sorted(row["roles"]),
        "status": row["status"],
        "locked_until": locked.isoformat() if locked is not None else None,
    }


# ---- logging in and out --------------------------------------------------------------


async def login(  # noqa: PLR0917 - one call site, each argument named there
    pool: asyncpg.Pool,
    ph: PasswordHasher,
    settings: OperatorSettings,
    login_name: str,
    password: str,
    request_id: str,
) -> Session | ApiError:
    """A session, or the refusal to raise (its count and audit entry are committed)."""
    row = await pool.fetchrow(
        "SELECT *, locked_until > now() AS locked FROM operator WHERE login = $1", login_name
    )
    who = None if row is None else principal_of(row)

    async def refused(error: ApiError, after: Any = None) -> ApiError:
        entry = audit.event(
            who, "operator.login", f"login:{login_name}", after=after, code=error.code,
            request_id=request_id, login=login_name,
        )  # fmt: skip
        await audit.append_alone(pool, entry)
        return error

    bad = Unauthorized("AUTH_OPERATOR_BAD_CREDENTIALS", _BAD_CREDENTIALS)
    if row is None:
        # Hash anyway: an unknown login answers in the time a wrong password does.
        await hash_password(ph, password)
        return await refused(bad)
    if row["status"] != "active":
        return await refused(Unauthorized("AUTH_OPERATOR_DISABLED", "this operator is disabled"))
    if row["locked"]:
        return await refused(_locked(row["locked_until"]))
    ok = await asyncio.to_thread(passwords.verify, ph, row["password_hash"], password)
    async with acquire(pool) as conn, conn.transaction():
        if not ok:
            counted = await conn.fetchrow(
                """UPDATE operator SET
                       locked_until = CASE WHEN failed_logins + 1 >= $2
                           THEN now() + make_interval(secs => $3) ELSE locked_until END,
                       failed_logins = CASE WHEN failed_logins + 1 >= $2
                           THEN 0 ELSE failed_logins + 1 END,
                       updated_at = now()
                   WHERE operator_id = $1
                   RETURNING failed_logins, locked_until, locked_until > now() AS locked""",
                row["operator_id"],
                settings.lockout_failures,
                float(settings.lockout_s),
            )
            assert counted is not None
            error = _locked(counted["locked_until"]) if counted["locked"] else bad
            entry = audit.event(
                who, "operator.login", f"operator:{row['operator_id']}", code=error.code,
                after={"failed_logins": counted["failed_logins"], "locked": counted["locked"]},
                request_id=request_id,
            )  # fmt: skip
            await audit.append(conn, entry)
            return error
        fresh = await conn.fetchrow(
            """UPDATE operator SET failed_logins = 0, locked_until = NULL, updated_at = now()
               WHERE operator_id = $1 AND status = 'active'
                 AND (locked_until IS NULL OR locked_until <= now())
               RETURNING *""",
            row["operator_id"],
        )
        if fresh is None:  # disabled or locked meanwhile
            error = Unauthorized("AUTH_OPERATOR_LOCKED", "this operator is locked or disabled")
        else:
            token = secrets.token_urlsafe(32)
            digest = token_sha256(token)
            expires_at = await conn.fetchval(
                """INSERT INTO operator_session (token_sha256, operator_id, expires_at)
                   VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING expires_at""",
                digest,
                row["operator_id"],
                float(settings.session_ttl_s),
            )
            principal = principal_of(fresh, digest)
            entry = audit.event(
                principal, "operator.login", f"operator:{principal.operator_id}",
                after={"expires_at": expires_at.isoformat()}, request_id=request_id,
            )  # fmt: skip
            await audit.append(conn, entry)
            if ph.check_needs_rehash(row["password_hash"]):
                await conn.execute(
                    "UPDATE operator SET password_hash = $2 WHERE operator_id = $1",
                    row["operator_id"],
                    await hash_password(ph, password),
                )
            return Session(token, expires_at, principal)
    return await refused(error)


def _locked(until: dt.datetime) -> Unauthorized:
    return Unauthorized(
        "AUTH_OPERATOR_LOCKED",
        f"too many wrong passwords: locked until {until:%Y-%m-%d %H:%M:%S} UTC, "
        "or until an admin unlocks it",
    )


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Principal:
    """The principal of a session token, or 401 with why not."""
    digest = token_sha256(token)
    row = await conn.fetchrow(
        """SELECT o.*, s.revoked_at IS NOT NULL AS revoked, s.expires_at <= now() AS expired
           FROM operator_session s JOIN operator o USING (operator_id)
           WHERE s.token_sha256 = $1""",
        digest,
    )
    if row is None:
        raise Unauthorized("AUTH_OPERATOR_UNKNOWN", "unknown operator token")
    if row["revoked"]:
        raise Unauthorized("AUTH_OPERATOR_TOKEN_REVOKED", "this session was ended: log in again")
    if row["expired"]:
        raise Unauthorized("AUTH_OPERATOR_TOKEN_EXPIRED", "this session expired: log in again")
    if row["status"] != "active":
        raise Unauthorized("AUTH_OPERATOR_DISABLED", "this operator is disabled")
    return principal_of(row, digest)


async def logout(conn: asyncpg.Connection, who: Principal, request_id: str) -> None:
    if who.session is not None:
        await conn.execute(
            """UPDATE operator_session SET revoked_at = now()
               WHERE token_sha256 = $1 AND revoked_at IS NULL""",
            who.session,
        )
    await audit.append(
        conn,
        audit.event(who, "operator.logout", f"operator:{who.operator_id}", request_id=request_id),
    )


# ---- managing operators ----------------------------------------------------------------


def check_roles(actor: Principal, roles: list[str]) -> frozenset[str]:
    wanted = frozenset(roles)
    unknown = sorted(wanted - set(ROLES))
    if not wanted or unknown or len(roles) != len(wanted):
        raise Unprocessable(
            "OPERATOR_ROLES_INVALID",
            f"roles are 1..{len(ROLES)} distinct of {', '.join(ROLES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
        )
    if wanted & UNION_ONLY_ROLES and not actor.all_tenants:
        raise Forbidden("OPERATOR_FORBIDDEN", "only a union_admin may grant union_admin")
    return wanted


async def _target(conn: asyncpg.Connection, actor: Principal, operator_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT * FROM operator WHERE operator_id = $1 FOR UPDATE", operator_id
    )
    if row is None or not actor.sees(row["tenant_id"]):
        raise NotFound("OPERATOR_NOT_FOUND", f"no operator {operator_id}")
    if row["roles"] and set(row["roles"]) & UNION_ONLY_ROLES and not actor.all_tenants:
        raise NotFound("OPERATOR_NOT_FOUND", f"no operator {operator_id}")
    return row


async def create(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    tenant_id: str,
    login_name: str,
    password_hash: str,
    roles: list[str],
    request_id: str,
) -> dict[str, Any]:
    granted = check_roles(actor, roles)
    if not actor.sees(tenant_id) or (
        await conn.fetchval("SELECT 1 FROM tenant WHERE tenant_id = $1", tenant_id) is None
    ):
        raise NotFound("TENANT_NOT_FOUND", f"no tenant {tenant_id}")
    row = await conn.fetchrow(
        """INSERT INTO operator (operator_id, tenant_id, login, password_hash, roles)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (login) DO NOTHING RETURNING *""",
        "op_" + secrets.token_hex(8),
        tenant_id,
        login_name,
        password_hash,
        sorted(granted),
    )
    if row is None:
        raise Unprocessable("OPERATOR_LOGIN_TAKEN", f"the login {login_name!r} is taken")
    view = view_of(row)
    await audit.append(
        conn,
        audit.event(
            actor, "operator.create", f"operator:{row['operator_id']}", after=view,
            request_id=request_id,
        ),
    )  # fmt: skip
    return view


async def change(
    conn: asyncpg.Connection,
    actor: Principal,
    operator_id: str,
    action: str,
    *,
    roles: list[str] | None = None,
    password_hash: str | None = None,
    reason: str = "",
    request_id: str = "",
) -> dict[str, Any]:
    """operator.roles | operator.disable | operator.enable | operator.unlock |
    operator.password: one change to one operator, audited with before and after."""
    row: asyncpg.Record | None = await _target(conn, actor, operator_id)
    assert row is not None
    before = view_of(row)
    if action in ("operator.roles", "operator.disable") and operator_id == actor.operator_id:
        raise Unprocessable("OPERATOR_SELF", "an operator cannot change their own roles or status")
    if action == "operator.roles":
        assert roles is not None
        granted = check_roles(actor, roles)
        row = await conn.fetchrow(
            """UPDATE operator SET roles = $2, updated_at = now() WHERE operator_id = $1
               RETURNING *""",
            operator_id,
            sorted(granted),
        )
    elif action in ("operator.disable", "operator.enable"):
        status = "disabled" if action == "operator.disable" else "active"
        row = await conn.fetchrow(
            """UPDATE operator SET status = $2, updated_at = now() WHERE operator_id = $1
               RETURNING *""",
            operator_id,
            status,
        )
        if status == "disabled":
            await revoke_sessions(conn, operator_id)
    elif action == "operator.unlock":
        row = await conn.fetchrow(
            """UPDATE operator SET failed_logins = 0, locked_until = NULL, updated_at = now()
               WHERE operator_id = $1 RETURNING *""",
            operator_id,
        )
    elif action == "operator.password":
        assert password_hash is not None
        row = await conn.fetchrow(
            """UPDATE operator SET password_hash = $2, password_changed_at = now(),
                   failed_logins = 0, locked_until = NULL, updated_at = now()
               WHERE operator_id = $1 RETURNING *""",
            operator_id,
            password_hash,
        )
        await revoke_sessions(conn, operator_id)
    else:
        raise AssertionError(action)
    assert row is not None
    after = view_of(row)
    if action == "operator.password":
        after = after | {"password": "reset"}  # that it changed, never what to
    if reason:
        after = after | {"reason": reason[:200]}
    await audit.append(
        conn,
        audit.event(
            actor, action, f"operator:{operator_id}", before=before, after=after,
            request_id=request_id,
        ),
    )  # fmt: skip
    return view_of(row)


async def revoke_sessions(conn: asyncpg.Connection, operator_id: str) -> None:
    await conn.execute(
        """UPDATE operator_session SET revoked_at = now()
           WHERE operator_id = $1 AND revoked_at IS NULL""",
        operator_id,
    )


async def listing(conn: asyncpg.Connection, actor: Principal | None) -> list[dict[str, Any]]:
    scope = None if actor is None else actor.scope
    rows = await conn.fetch(
        """SELECT * FROM operator WHERE $1::text IS NULL OR tenant_id = $1
           ORDER BY tenant_id, login LIMIT 1000""",
        scope,
    )
    hide_union = actor is not None and not actor.all_tenants
    return [
        view_of(row) for row in rows if not (hide_union and set(row["roles"]) & UNION_ONLY_ROLES)
    ]

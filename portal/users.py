"""The portal's users: the platform's and merchants' operators, their roles and passwords.

A user created or given a password by someone else must change it at first
login. Users are never deleted (the audit log names them): they are disabled.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from portal.i18n import N_
from portal.passwords import hash_password_async, policy_problem
from portal.permissions import MERCHANT_ROLES, Role
from portal.sessions import end_user_sessions

LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
LIST_LIMIT_MAX = 200
_COLUMNS = ("id, login, display_name, role, merchant_id, must_change_password, disabled, failed_logins, "
            "locked_until, created_at, updated_at")


class UserError(ValueError):
    """Bad input for a user; ``str()`` is one English sentence for the page."""


def check_fields(login: str, display_name: str, role: str, merchant_id: str | None) -> None:
    """Raise UserError unless the fields make a valid user."""
    if not LOGIN.match(login):
        raise UserError(N_("Login must be 3 to 64 of a-z 0-9 . _ @ - and start with a letter or digit."))
    if not display_name.strip() or len(display_name) > 80:
        raise UserError(N_("Name must be 1 to 80 characters."))
    if role not in set(Role):
        raise UserError(N_("Unknown role."))
    if (role in MERCHANT_ROLES) != bool(merchant_id):
        raise UserError(N_("A merchant's user needs its merchant; a platform user has none."))


async def create_user(conn: asyncpg.Connection, login: str, display_name: str, password: str, role: str,
                      merchant_id: str | None, must_change_password: bool = True) -> dict[str, Any]:
    """Add a user; ``must_change_password`` False only for a user choosing its own password."""
    check_fields(login, display_name, role, merchant_id)
    problem = policy_problem(password, login)
    if problem:
        raise UserError(problem)
    if merchant_id is not None and not await conn.fetchval(
            "SELECT 1 FROM loyalty.merchants WHERE merchant_id = $1", merchant_id):
        raise UserError(N_("No such merchant."))
    password_hash = await hash_password_async(password)
    row = await conn.fetchrow(
        f"INSERT INTO portal.users(login, display_name, password_hash, role, merchant_id, must_change_password) "
        f"VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (login) DO NOTHING RETURNING {_COLUMNS}",
        login, display_name, password_hash, role, merchant_id, must_change_password)
    if row is None:
        raise UserError(N_("That login is taken."))
    return dict(row)


async def get_user(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> dict[str, Any] | None:
    """One user (without its password hash), or None."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM portal.users WHERE id = $1", user_id)
    return None if row is None else dict(row)


async def find_for_login(conn: asyncpg.Connection | asyncpg.Pool, login: str) -> dict[str, Any] | None:
    """A user by login with its password hash and lockout state, for the login check only."""
    if len(login) > 64:
        return None
    row = await conn.fetchrow(
        "SELECT id, login, password_hash, disabled, failed_logins, locked_until > now() AS locked "
        "FROM portal.users WHERE login = $1", login)
    return None if row is None else dict(row)


async def list_users(conn: asyncpg.Connection | asyncpg.Pool, merchant_id: str | None = None,
                     only_merchant: bool = False, after_id: int | None = None, limit: int = 50) -> dict[str, Any]:
    """A page of users by id: all, or (``only_merchant``) those of ``merchant_id``."""
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM portal.users WHERE ($1::text IS NULL OR merchant_id = $1) "
        f"AND ($2::bigint IS NULL OR id > $2) ORDER BY id LIMIT {limit + 1}",
        merchant_id if only_merchant or merchant_id else None, after_id)
    page = [dict(r) for r in rows[:limit]]
    return {"users": page, "next_after_id": page[-1]["id"] if len(rows) > limit else None}


async def set_disabled(conn: asyncpg.Connection, user_id: int, disabled: bool) -> bool:
    """Disable (ending its sessions) or enable a user; False when there is no such user."""
    done = await conn.execute(
        "UPDATE portal.users SET disabled = $2, failed_logins = 0, locked_until = NULL, updated_at = now() "
        "WHERE id = $1", user_id, disabled)
    if disabled:
        await end_user_sessions(conn, user_id)
    return bool(done.endswith(" 1"))


async def set_password(conn: asyncpg.Connection, user_id: int, login: str, password: str, by_self: bool) -> None:
    """Give a user a new password. Set by someone else, it must be changed at next login and
    the user's sessions end; set by the user, its other sessions stay (the caller rotates its own)."""
    problem = policy_problem(password, login)
    if problem:
        raise UserError(problem)
    password_hash = await hash_password_async(password)
    await conn.execute(
        "UPDATE portal.users SET password_hash = $2, must_change_password = $3, failed_logins = 0, "
        "locked_until = NULL, updated_at = now() WHERE id = $1", user_id, password_hash, not by_self)
    if not by_self:
        await end_user_sessions(conn, user_id)


async def record_login_failure(conn: asyncpg.Connection | asyncpg.Pool, user_id: int, failures_max: int,
                               lockout_s: int) -> None:
    """Count a failed login; the ``failures_max``-th in a row locks the account for ``lockout_s``."""
    await conn.execute(
        "UPDATE portal.users SET failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END, "
        "locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + make_interval(secs => $3) "
        "ELSE locked_until END WHERE id = $1", user_id, failures_max, float(lockout_s))


async def record_login_success(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> None:
    """A successful login clears the failure count."""
    await conn.execute("UPDATE portal.users SET failed_logins = 0, locked_until = NULL WHERE id = $1", user_id)

"""Members' online credentials: log in with a card number or a phone, passwords, activation codes.

A member logs in with the number of any of its cards, or with the phone it logs in
with (``loyalty.members.phone``), and its password. The first password is set by
whoever issues the card (the member must change it at first login) or chosen by
the member with a one-time activation code. Guessing is bounded twice, as for
operators: per member (``login_account_failures_max`` failures in a row lock the
member for ``login_lockout_s``) and per client address (portal.throttle, shared
with the operators' login). Both the browser pages and the member API use
:func:`authenticate`.

Only argon2id hashes of passwords, and only keyed hashes (HMAC with the portal's
secret) of activation codes, are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.loyalty import card_numbers
from ledger.loyalty.cards import login_phone
from portal import throttle
from portal.i18n import N_
from portal.passwords import hash_password_async, policy_problem, verify_password_async
from portal.settings import PortalSettings

IDENTIFIER_CHARS_MAX = 32
PASSWORD_CHARS_MAX = 1024  # longer than any allowed password; bounds the hashing work
ACTIVATION_TTL_S_DEFAULT = 7 * 86_400
# 12 characters from 31 that cannot be misread (no 0/O, 1/I/L): ~59 bits, shown as XXXX-XXXX-XXXX.
_ACTIVATION_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_ACTIVATION_CHARS = 12
_CARD_NUMBER = re.compile(r"^[0-9]{12,19}$")


class MemberAuthError(ValueError):
    """Refused input (a password the policy refuses, a code that does not work); ``str()`` is an
    English message id for the catalogs."""


@dataclass(frozen=True)
class Authenticated:
    """A member whose password matched."""

    member_id: int
    must_change_password: bool


async def find_member(conn: asyncpg.Connection | asyncpg.Pool, identifier: str) -> dict[str, Any] | None:
    """The member a login names (a card number, else a phone), with its login state, or None.

    Any of the member's cards names it, blocked or not: blocking a card stops its use at
    terminals, not its holder's access to its history.
    """
    identifier = identifier.strip().replace(" ", "")
    if not identifier or len(identifier) > IDENTIFIER_CHARS_MAX:
        return None
    columns = ("m.id AS member_id, m.status, m.name, l.password_hash, l.must_change_password, "
               "coalesce(l.locked_until > now(), false) AS locked")
    row = None
    if _CARD_NUMBER.match(identifier):
        row = await conn.fetchrow(
            f"SELECT {columns} FROM loyalty.cards c JOIN loyalty.members m ON m.id = c.member_id "
            "LEFT JOIN portal.member_logins l ON l.member_id = m.id WHERE c.pan_hash = $1",
            (await card_numbers.vault(conn)).lookup_hash(identifier))
    phone = login_phone(identifier)
    if row is None and phone is not None:
        row = await conn.fetchrow(
            f"SELECT {columns} FROM loyalty.members m LEFT JOIN portal.member_logins l ON l.member_id = m.id "
            "WHERE m.phone = $1", phone)
    return None if row is None else dict(row)


async def authenticate(pool: asyncpg.Pool, identifier: str, password: str, address: str,
                       settings: PortalSettings) -> Authenticated | None:
    """The member when ``password`` is right and nothing is locked; None otherwise (one answer for
    every failure: no oracle for which card numbers or phones exist)."""
    password = password[:PASSWORD_CHARS_MAX]
    if await throttle.address_locked(pool, address):
        return None
    member = await find_member(pool, identifier)
    if member is not None and member["locked"]:
        await throttle.record_failure(pool, address, settings)
        return None
    # Verified even when nobody matched, so an unknown login costs the same time.
    ok = await verify_password_async(member["password_hash"] if member else None, password)
    if not ok or member is None or member["status"] != "active":
        await throttle.record_failure(pool, address, settings)
        if member is not None and member["password_hash"] is not None:
            await pool.execute(
                "UPDATE portal.member_logins SET "
                "failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END, "
                "locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + make_interval(secs => $3) "
                "ELSE locked_until END WHERE member_id = $1",
                member["member_id"], settings.login_account_failures_max, float(settings.login_lockout_s))
        return None
    await pool.execute("UPDATE portal.member_logins SET failed_logins = 0, locked_until = NULL "
                       "WHERE member_id = $1", member["member_id"])
    return Authenticated(int(member["member_id"]), bool(member["must_change_password"]))


async def set_password(conn: asyncpg.Connection, member_id: int, password: str, by_self: bool) -> None:
    """Give a member a password. Set by someone else (at issue, at a reset), it must be changed at
    the next login and the member's sessions end; set by the member, its other sessions stay (the
    caller rotates its own). MemberAuthError when the policy refuses it."""
    problem = policy_problem(password, "")
    if problem:
        raise MemberAuthError(problem)
    password_hash = await hash_password_async(password)
    await conn.execute(
        "INSERT INTO portal.member_logins(member_id, password_hash, must_change_password) VALUES ($1, $2, $3) "
        "ON CONFLICT (member_id) DO UPDATE SET password_hash = $2, must_change_password = $3, failed_logins = 0, "
        "locked_until = NULL, updated_at = now()", member_id, password_hash, not by_self)
    if not by_self:
        await end_member_sessions(conn, member_id)


async def check_password(conn: asyncpg.Connection | asyncpg.Pool, member_id: int, password: str) -> bool:
    """True when ``password`` is the member's current one (for a password change)."""
    stored = await conn.fetchval("SELECT password_hash FROM portal.member_logins WHERE member_id = $1", member_id)
    return await verify_password_async(stored, password[:PASSWORD_CHARS_MAX]) and stored is not None


async def end_member_sessions(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> None:
    """End every browser session of a member (a password set by someone else, a disabled member)."""
    await conn.execute("DELETE FROM portal.member_sessions WHERE member_id = $1", member_id)


def normalize_code(code: str) -> str:
    """An activation code as typed (any case, dashes, spaces) in its canonical form.

    >>> normalize_code(" abcd-efgh-jkmn "), normalize_code("ABCD EFGH JKMN")
    ('ABCDEFGHJKMN', 'ABCDEFGHJKMN')
    """
    return re.sub(r"[\s-]", "", code).upper()[:_ACTIVATION_CHARS * 2]


def _code_hash(secret: bytes, code: str) -> bytes:
    return hmac.new(secret, b"member-activation|" + normalize_code(code).encode(), hashlib.sha256).digest()


async def new_activation(conn: asyncpg.Connection, member_id: int, created_by: str, secret: bytes,
                         ttl_s: int = ACTIVATION_TTL_S_DEFAULT) -> str:
    """A one-time activation code for ``member_id`` (shown once, to give to the member), valid
    ``ttl_s`` seconds. Earlier unused codes of the member stop working."""
    code = "".join(secrets.choice(_ACTIVATION_ALPHABET) for _ in range(_ACTIVATION_CHARS))
    await conn.execute("UPDATE portal.member_activations SET used_at = now() "
                       "WHERE member_id = $1 AND used_at IS NULL", member_id)
    await conn.execute(
        "INSERT INTO portal.member_activations(code_hash, member_id, created_by, expires_at) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        _code_hash(secret, code), member_id, created_by[:100], float(ttl_s))
    return "-".join(code[i:i + 4] for i in range(0, _ACTIVATION_CHARS, 4))


async def activate(pool: asyncpg.Pool, identifier: str, code: str, password: str, address: str,
                   settings: PortalSettings) -> int | None:
    """Set the member's password with a one-time code: the member id, or None when the login, the
    code or the address's throttle says no (failures count against the address like a failed
    login). MemberAuthError when the code is right but the policy refuses the password."""
    if await throttle.address_locked(pool, address):
        return None
    member = await find_member(pool, identifier)
    if member is None or member["status"] != "active":
        await throttle.record_failure(pool, address, settings)
        return None
    problem = policy_problem(password[:PASSWORD_CHARS_MAX], "")
    async with pool.acquire() as conn, conn.transaction():
        used = await conn.fetchval(
            "UPDATE portal.member_activations SET used_at = now() WHERE code_hash = $1 AND member_id = $2 "
            "AND used_at IS NULL AND expires_at > now() RETURNING member_id",
            _code_hash(settings.secret, code), member["member_id"])
        if used is not None and problem is None:
            await set_password(conn, int(used), password, by_self=True)
            await end_member_sessions(conn, int(used))
            return int(used)
        if used is not None:
            # The code stays usable for a better password: undo its use with the transaction.
            raise MemberAuthError(problem or N_("The password was refused."))
    await throttle.record_failure(pool, address, settings)
    return None

"""Bearer tokens for members' apps: a short-lived access token and a revocable refresh token.

A login starts a token family; ``refresh`` rotates both tokens of the family and
marks the refresh token it used; a used refresh token shown again revokes the
family (the token was copied, and one of the two holders is not the member).
Logout revokes the family; so does a disabled member, and a password set after the
family's login (a merchant's reset, an activation code, a change from another
device): every token check compares the two. Only HMAC(secret, token) is stored. Access tokens are
checked against the database on every request (one index probe), so logout and
revocation take effect at once, not at the token's expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg

from portal.settings import PortalSettings

TOKEN_BYTES = 32
TOKEN_CHARS_MAX = 128
ACCESS_PREFIX = "swa_"
REFRESH_PREFIX = "swr_"
EXPIRED_SWEEP_MAX = 1000


@dataclass(frozen=True)
class Tokens:
    """What a login or a refresh hands the app."""

    access_token: str
    refresh_token: str
    expires_in_s: int
    refresh_expires_in_s: int
    password_change_only: bool

    def body(self) -> dict[str, object]:
        """The JSON answer (RFC 6749's names where they exist)."""
        return {"access_token": self.access_token, "token_type": "Bearer", "expires_in": self.expires_in_s,
                "refresh_token": self.refresh_token, "refresh_expires_in": self.refresh_expires_in_s,
                "password_change_required": self.password_change_only}


@dataclass(frozen=True)
class Caller:
    """The member an access token speaks for."""

    member_id: int
    family_id: int
    password_change_only: bool


class TokenStore:
    """Issues, checks, rotates and revokes tokens."""

    def __init__(self, pool: asyncpg.Pool, settings: PortalSettings) -> None:
        self.pool = pool
        self.settings = settings

    def _hash(self, kind: str, token: str) -> bytes:
        return hmac.new(self.settings.secret, f"api-{kind}|{token}".encode(), hashlib.sha256).digest()

    async def _mint(self, conn: asyncpg.Connection, family_id: int, password_change_only: bool) -> Tokens:
        api = self.settings.api
        access = ACCESS_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        await conn.execute(
            "INSERT INTO portal.api_tokens(token_hash, family_id, kind, expires_at) VALUES "
            "($1, $3, 'access', now() + make_interval(secs => $4)), "
            "($2, $3, 'refresh', now() + make_interval(secs => $5))",
            self._hash("access", access), self._hash("refresh", refresh), family_id,
            float(api.access_token_ttl_s), float(api.refresh_token_ttl_s))
        return Tokens(access, refresh, api.access_token_ttl_s, api.refresh_token_ttl_s, password_change_only)

    async def login(self, member_id: int, password_change_only: bool) -> Tokens:
        """A new family for a member whose password was just checked; beyond
        ``sessions_per_member_max`` live families, the oldest are revoked."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM portal.api_tokens WHERE token_hash IN (SELECT token_hash FROM portal.api_tokens "
                "WHERE expires_at < now() LIMIT $1)", EXPIRED_SWEEP_MAX)
            family_id = int(await conn.fetchval(
                "INSERT INTO portal.api_token_families(member_id, password_change_only) VALUES ($1, $2) "
                "RETURNING id", member_id, password_change_only))
            await self._revoke(conn, "id IN (SELECT id FROM portal.api_token_families WHERE member_id = $1 "
                                     "AND revoked_at IS NULL ORDER BY id DESC OFFSET $2)", "sessions_max",
                               member_id, self.settings.api.sessions_per_member_max)
            return await self._mint(conn, family_id, password_change_only)

    async def caller(self, access_token: str | None) -> Caller | None:
        """The member of a live access token (its family not revoked, the member active), or None."""
        if not access_token or len(access_token) > TOKEN_CHARS_MAX or not access_token.startswith(ACCESS_PREFIX):
            return None
        row = await self.pool.fetchrow(
            "SELECT f.member_id, f.id AS family_id, f.password_change_only FROM portal.api_tokens t "
            "JOIN portal.api_token_families f ON f.id = t.family_id JOIN loyalty.members m ON m.id = f.member_id "
            "JOIN portal.member_logins l ON l.member_id = f.member_id "
            "WHERE t.token_hash = $1 AND t.kind = 'access' AND t.expires_at > now() AND f.revoked_at IS NULL "
            "AND m.status = 'active' AND l.updated_at <= f.password_checked_at", self._hash("access", access_token))
        return None if row is None else Caller(int(row["member_id"]), int(row["family_id"]),
                                               bool(row["password_change_only"]))

    async def refresh(self, refresh_token: str) -> Tokens | None:
        """New tokens for a live, unused refresh token (the family's older tokens end); None when
        the token is unknown, expired or revoked. A used one revokes its family, then None."""
        if len(refresh_token) > TOKEN_CHARS_MAX or not refresh_token.startswith(REFRESH_PREFIX):
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT t.family_id, t.used_at IS NOT NULL AS used, f.password_change_only "
                "FROM portal.api_tokens t JOIN portal.api_token_families f ON f.id = t.family_id "
                "JOIN loyalty.members m ON m.id = f.member_id JOIN portal.member_logins l ON l.member_id = f.member_id "
                "WHERE t.token_hash = $1 AND t.kind = 'refresh' AND t.expires_at > now() "
                "AND f.revoked_at IS NULL AND m.status = 'active' AND l.updated_at <= f.password_checked_at "
                "FOR UPDATE OF t, f",
                self._hash("refresh", refresh_token))
            if row is None:
                return None
            family_id = int(row["family_id"])
            if row["used"]:
                await self._revoke(conn, "id = $1", "reuse", family_id)
                return None
            await conn.execute("UPDATE portal.api_tokens SET used_at = now() WHERE token_hash = $1",
                               self._hash("refresh", refresh_token))
            # The family's earlier access tokens end with the rotation; used refresh tokens stay
            # (until they expire) so that a replay of one is recognised.
            await conn.execute("DELETE FROM portal.api_tokens WHERE family_id = $1 AND kind = 'access'", family_id)
            return await self._mint(conn, family_id, bool(row["password_change_only"]))

    async def logout(self, family_id: int) -> None:
        """Revoke one family (the caller's own)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._revoke(conn, "id = $1", "logout", family_id)

    async def password_changed(self, conn: asyncpg.Connection, member_id: int, family_id: int) -> None:
        """After a member changed its password from ``family_id``: every other family is revoked
        and this one is no longer limited to changing the password."""
        await self._revoke(conn, "member_id = $1 AND id <> $2 AND revoked_at IS NULL", "password",
                           member_id, family_id)
        await conn.execute("UPDATE portal.api_token_families SET password_change_only = false, "
                           "password_checked_at = now() WHERE id = $1", family_id)

    @staticmethod
    async def _revoke(conn: asyncpg.Connection, where: str, reason: str, *args: object) -> None:
        # The revoked family's row stays (who, when, why); its access tokens go at once.
        ids = await conn.fetch(
            f"UPDATE portal.api_token_families SET revoked_at = now(), revoked_reason = ${len(args) + 1} "
            f"WHERE revoked_at IS NULL AND ({where}) RETURNING id", *args, reason)
        if ids:
            await conn.execute("DELETE FROM portal.api_tokens WHERE family_id = ANY($1::bigint[])",
                               [r["id"] for r in ids])


async def revoke_member_tokens(conn: asyncpg.Connection | asyncpg.Pool, member_id: int) -> None:
    """End every API session of a member (a password set by someone else, a disabled member)."""
    ids = await conn.fetch(
        "UPDATE portal.api_token_families SET revoked_at = now(), revoked_reason = 'password' "
        "WHERE member_id = $1 AND revoked_at IS NULL RETURNING id", member_id)
    if ids:
        await conn.execute("DELETE FROM portal.api_tokens WHERE family_id = ANY($1::bigint[])",
                           [r["id"] for r in ids])

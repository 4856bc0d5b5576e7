"""Server-side sessions in PostgreSQL, so several portal processes share them and logout is real.

The cookie carries a random token; the table keeps only HMAC(secret, token), so a
copy of the table cannot be replayed as cookies. A session ends at its idle or
absolute expiry, at logout, or when its user is disabled or given a new password.
The token changes at every login (no session fixation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from portal.settings import PortalSettings

COOKIE_PLAIN = "swd_session"
# The __Host- prefix makes the browser insist on Secure, Path=/ and no Domain.
COOKIE_SECURE = "__Host-swd_session"
TOKEN_BYTES = 32
EXPIRED_SWEEP_MAX = 1000


@dataclass(frozen=True)
class Session:
    """A logged-in user as the pages see it."""

    id_hash: bytes
    user_id: int
    login: str
    display_name: str
    role: str
    merchant_id: str | None
    must_change_password: bool
    csrf_token: str


def is_secure(request: Request, settings: PortalSettings) -> bool:
    """True when the browser reached us over TLS (ours, or a trusted proxy's X-Forwarded-Proto)."""
    return settings.tls or request.url.scheme == "https"


class SessionStore:
    """Creates, finds and ends operators' sessions.

    The table, its owner column and the cookie's names are class attributes, so a
    store for another kind of principal (portal.member_sessions) differs in those
    and in :meth:`load` only.
    """

    table = "portal.sessions"
    owner_column = "user_id"
    cookie_plain = COOKIE_PLAIN
    cookie_secure = COOKIE_SECURE

    def __init__(self, pool: asyncpg.Pool, settings: PortalSettings) -> None:
        self.pool = pool
        self.settings = settings

    def cookie_name(self, secure: bool) -> str:
        """This store's cookie name for a TLS or a plain connection."""
        return self.cookie_secure if secure else self.cookie_plain

    def _hash(self, token: str) -> bytes:
        return hmac.new(self.settings.secret, token.encode(), hashlib.sha256).digest()

    async def create(self, conn: asyncpg.Connection, user_id: int) -> str:
        """A new session for ``user_id``; returns the cookie token. Oldest sessions past the bound end."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        s = self.settings
        table, owner = self.table, self.owner_column
        await conn.execute(
            f"DELETE FROM {table} WHERE id_hash IN (SELECT id_hash FROM {table} "
            "WHERE expires_absolute_at < now() OR expires_idle_at < now() LIMIT $1)", EXPIRED_SWEEP_MAX)
        await conn.execute(
            f"INSERT INTO {table}(id_hash, {owner}, csrf_token, expires_idle_at, expires_absolute_at) "
            "VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5))",
            self._hash(token), user_id, secrets.token_urlsafe(32), float(s.session_idle_s),
            float(s.session_absolute_s))
        await conn.execute(
            f"DELETE FROM {table} WHERE {owner} = $1 AND id_hash NOT IN (SELECT id_hash FROM "
            f"{table} WHERE {owner} = $1 ORDER BY created_at DESC LIMIT $2)", user_id, s.sessions_per_user_max)
        return token

    async def load(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle expiry pushed on), or None."""
        if not token or len(token) > 128:
            return None
        row = await self.pool.fetchrow(
            "UPDATE portal.sessions s SET last_seen_at = now(), "
            "expires_idle_at = least(now() + make_interval(secs => $2), s.expires_absolute_at) "
            "FROM portal.users u WHERE s.id_hash = $1 AND u.id = s.user_id AND NOT u.disabled "
            "AND s.expires_idle_at > now() AND s.expires_absolute_at > now() "
            "RETURNING s.id_hash, s.user_id, u.login, u.display_name, u.role, u.merchant_id, "
            "u.must_change_password, s.csrf_token", self._hash(token), float(self.settings.session_idle_s))
        return None if row is None else Session(**dict(row))

    async def end(self, token: str | None) -> None:
        """End the session of ``token`` on the server (logout)."""
        if token and len(token) <= 128:
            await self.pool.execute(f"DELETE FROM {self.table} WHERE id_hash = $1", self._hash(token))

    def set_cookie(self, request: Request, response: Response, token: str) -> None:
        """Hand the browser the session cookie: HttpOnly, SameSite=Lax, Secure over TLS."""
        secure = is_secure(request, self.settings)
        response.set_cookie(self.cookie_name(secure), token, path="/", secure=secure, httponly=True, samesite="lax")

    def clear_cookie(self, request: Request, response: Response) -> None:
        """Tell the browser to drop the session cookie."""
        secure = is_secure(request, self.settings)
        response.delete_cookie(self.cookie_name(secure), path="/", secure=secure, httponly=True, samesite="lax")

    def token_of(self, request: Request) -> str | None:
        """The session token the browser sent, if any."""
        return request.cookies.get(self.cookie_name(is_secure(request, self.settings)))


async def end_user_sessions(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> None:
    """End every session of a user (disabled, or given a new password by someone else)."""
    await conn.execute("DELETE FROM portal.sessions WHERE user_id = $1", user_id)

"""What every member page shares: the member's session, the forced password change, CSRF.

Members are not portal users: they have their own sessions (``portal.member_sessions``,
their own cookie), their own login page (``/member/login``) and their own pages under
``/member``. A member page is an ``async def handler(request, page: MemberPage) ->
Response`` registered with ``@member_page("route_name")``; the route name must be in
``permissions.MEMBER_ROUTES``. An operator's session opens no member page and a
member's session no operator page: the cookies differ.

A member's objects (cards, orders, messages) are checked against
``page.session.member_id`` by the handler: another member's answers 404.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from portal import mail, permissions
from portal.i18n import N_
from portal.sessions import SessionStore
from portal.web import Portal, checked_form, portal_of, redirect

MEMBER_COOKIE_PLAIN = "swd_member"
MEMBER_COOKIE_SECURE = "__Host-swd_member"


@dataclass(frozen=True)
class MemberSession:
    """A logged-in member as the pages see it."""

    id_hash: bytes
    member_id: int
    name: str
    must_change_password: bool
    csrf_token: str

    @property
    def display_name(self) -> str:
        return self.name


class MemberSessionStore(SessionStore):
    """Members' sessions: as operators' (keyed token hash, idle and absolute expiry, a bound per
    member), in their own table and cookie."""

    table = "portal.member_sessions"
    owner_column = "member_id"
    cookie_plain = MEMBER_COOKIE_PLAIN
    cookie_secure = MEMBER_COOKIE_SECURE

    async def load_member(self, token: str | None) -> MemberSession | None:
        """The live session of ``token`` (its idle expiry pushed on), or None."""
        if not token or len(token) > 128:
            return None
        row = await self.pool.fetchrow(
            "UPDATE portal.member_sessions s SET last_seen_at = now(), "
            "expires_idle_at = least(now() + make_interval(secs => $2), s.expires_absolute_at) "
            "FROM loyalty.members m JOIN portal.member_logins l ON l.member_id = m.id "
            "WHERE s.id_hash = $1 AND m.id = s.member_id AND m.status = 'active' "
            "AND s.expires_idle_at > now() AND s.expires_absolute_at > now() "
            "RETURNING s.id_hash, s.member_id, m.name, l.must_change_password, s.csrf_token",
            self._hash(token), float(self.settings.session_idle_s))
        return None if row is None else MemberSession(**dict(row))


def member_sessions(portal: Portal) -> MemberSessionStore:
    """The members' session store over the portal's pool and settings."""
    return MemberSessionStore(portal.pool, portal.settings)


@dataclass(frozen=True)
class MemberPage:
    """What a member page handler gets besides the request."""

    portal: Portal
    session: MemberSession
    form: FormData | None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.portal.pool

    @property
    def member_id(self) -> int:
        return self.session.member_id

    @property
    def actor(self) -> str:
        """How the audit log names this member."""
        return f"member:{self.session.member_id}"

    def field(self, name: str, limit: int = 200) -> str:
        """A form field's text, stripped and cut to ``limit`` characters; empty when absent."""
        value = self.form.get(name) if self.form is not None else None
        return value.strip()[:limit] if isinstance(value, str) else ""


MemberHandler = Callable[[Request, MemberPage], Awaitable[Response]]


def member_page(route: str, files_max: int = 0) -> Callable[[MemberHandler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a member handler: member session required, forced password change, CSRF on POST."""
    if route not in permissions.MEMBER_ROUTES:
        raise AssertionError(f"route {route} is not a member route")

    def wrap(handler: MemberHandler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            portal = portal_of(request)
            store = member_sessions(portal)
            session = await store.load_member(store.token_of(request))
            if session is None:
                target = request.url.path if request.method == "GET" else "/member"
                return redirect("/member/login?next=" + quote(target, safe="/"))
            if session.must_change_password and route not in ("member_password", "member_logout"):
                return redirect("/member/password")
            # The header shows the mailbox's unread count on every member page (a bounded count).
            request.state.unread_mail = await mail.unread_count(portal.pool, mail.Inbox.member(session.member_id))
            form = await checked_form(request, session.csrf_token, files_max)
            return await handler(request, MemberPage(portal, session, form))

        endpoint.route_name = route  # type: ignore[attr-defined]
        return endpoint

    return wrap


def member_next(value: str | None) -> str:
    """A post-login destination inside the member pages.

    >>> member_next("/member/orders"), member_next("/merchants"), member_next("//evil/member")
    ('/member/orders', '/member', '/member')
    """
    if not value or not value.startswith("/member") or "\\" in value or len(value) > 500:
        return "/member"
    return value


# The member pages' menu, in order: (route name, English label for the catalogs).
MEMBER_MENU: list[tuple[str, str]] = [
    ("member_home", N_("My account")),
    ("member_balances", N_("Balances")),
    ("member_history", N_("Transactions")),
    ("member_cards", N_("My cards")),
    ("member_voucher", N_("Top-up card")),
    ("member_rates", N_("Points rates")),
    ("member_exchange", N_("Exchange points")),
    ("member_profile", N_("Profile")),
    ("member_mall", N_("Points mall")),
    ("member_orders", N_("My orders")),
    ("member_promotions", N_("Promotions")),
    ("member_mail", N_("Mailbox")),
    ("member_feedback", N_("Feedback")),
]


def member_menu() -> list[tuple[str, str]]:
    """The member menu's entries (a template global)."""
    return MEMBER_MENU


# What other areas add to the member home page's context (promotions, unread mail, ...): each
# provider gets the pool and the member's id and returns names for its partial, which
# member/home.html includes when it exists (``member/home_promotions.html``). Append yours.
HomePart = Callable[[asyncpg.Pool, int], Awaitable[dict[str, Any]]]
MEMBER_HOME_PARTS: list[HomePart] = []


async def home_context(pool: asyncpg.Pool, member_id: int) -> dict[str, Any]:
    """Every provider's names for the member home page, merged in order."""
    merged: dict[str, Any] = {}
    for part in MEMBER_HOME_PARTS:
        merged.update(await part(pool, member_id))
    return merged

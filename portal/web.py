"""What every page shares: the session check, the permission check, CSRF, rendering.

A page is an ``async def handler(request, page: Page) -> Response`` registered
with ``@page("route_name")``; the route name is its key in permissions.RULES.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import asyncpg
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ledger.loyalty.mall import Mall
from ledger.loyalty.operations import Loyalty
from ledger.standby_reads import StandbyReads
from portal import csrf, mail, permissions
from portal.sessions import Session, SessionStore
from portal.settings import PortalSettings

FORM_FIELDS_MAX = 60


# The methods a route answers: reads, changes, and forms (shown by GET, sent by POST).
GET, POST, FORM = ["GET"], ["POST"], ["GET", "POST"]


@dataclass(frozen=True)
class Portal:
    """The application's shared state (``request.app.state.portal``)."""

    settings: PortalSettings
    pool: asyncpg.Pool
    sessions: SessionStore
    templates: Jinja2Templates
    # The web trading seat's operations (None when the portal was built without ledger settings).
    loyalty: Loyalty | None = None
    # Seals terminals' MAC keys (None: keyed terminals cannot be added from the portal).
    master_key: bytes | None = field(default=None, repr=False)
    # The points mall's orders (None, as the seat, without ledger settings).
    mall: Mall | None = None
    # Where the read pages read: a fresh standby, else the primary (None: the primary).
    reads: StandbyReads | None = None


@dataclass(frozen=True)
class Page:
    """What a page handler gets besides the request."""

    portal: Portal
    session: Session
    form: FormData | None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.portal.pool

    async def read_pool(self) -> asyncpg.Pool:
        """The pool for a page that only reads (search, statistics, exports): a standby within its
        staleness bound ([database] read_dsn), else the primary. Never for what moves money."""
        reads = self.portal.reads
        return self.portal.pool if reads is None else await reads.pool()

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"portal:{self.session.login}"

    def field(self, name: str, limit: int = 200) -> str:
        """A form field's text, stripped and cut to ``limit`` characters; empty when absent."""
        value = self.form.get(name) if self.form is not None else None
        return value.strip()[:limit] if isinstance(value, str) else ""

    def own_merchant(self) -> str | None:
        """The merchant a merchant's user is confined to; None for the platform's users."""
        return self.session.merchant_id if self.session.role in permissions.MERCHANT_ROLES else None

    def require_visible(self, object_merchant_id: str | None) -> None:
        """404 unless this user may see an object of ``object_merchant_id``."""
        if not permissions.visible(self.session.role, self.session.merchant_id, object_merchant_id):
            raise HTTPException(404)


Handler = Callable[[Request, Page], Awaitable[Response]]


def portal_of(request: Request) -> Portal:
    """The shared state of the app serving ``request``."""
    state: Portal = request.app.state.portal
    return state


class AnySession(Protocol):
    """An operator's or a member's session, as a page renders it."""

    @property
    def csrf_token(self) -> str: ...


def render(request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200,
           session: AnySession | None = None) -> Response:
    """A page from ``template`` with the request, the session and the CSRF token in its context."""
    ctx: dict[str, Any] = {"session": session, "csrf_token": session.csrf_token if session else ""}
    ctx.update(context or {})
    return portal_of(request).templates.TemplateResponse(request, template, ctx, status_code=status_code)


def redirect(path: str) -> RedirectResponse:
    """See-other to a path of ours (after a POST, and to the login page)."""
    return RedirectResponse(path, status_code=303)


def safe_next(value: str | None) -> str:
    """A post-login destination that stays on this site.

    >>> safe_next("/merchants?q=a"), safe_next("//evil.example/"), safe_next("https://x"), safe_next(None)
    ('/merchants?q=a', '/', '/', '/')
    """
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 500:
        return "/"
    return value


async def checked_form(request: Request, csrf_token: str, files_max: int) -> FormData | None:
    """A POST's form, bounded (fields, files), once its CSRF token matches the session's (403
    otherwise); None for any other method. Operators' and members' pages alike."""
    if request.method != "POST":
        return None
    form = await request.form(max_files=files_max, max_fields=FORM_FIELDS_MAX)
    if not csrf.matches(csrf_token, form.get(csrf.FIELD)):
        raise HTTPException(403, "csrf")
    return form


def page(route: str, files_max: int = 0) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler: session required, forced password change, role allowed, CSRF on POST.

    ``files_max``: how many uploaded files a POST may carry (multipart; the body limit bounds their size).
    """
    if route not in permissions.RULES:
        raise AssertionError(f"route {route} has no permission rule")

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            portal = portal_of(request)
            session = await portal.sessions.load(portal.sessions.token_of(request))
            if session is None:
                target = request.url.path if request.method == "GET" else "/"
                return redirect("/login?next=" + quote(target, safe="/"))
            if session.must_change_password and route not in ("password", "logout"):
                return redirect("/password")
            if not permissions.allowed(route, session.role):
                raise HTTPException(403)
            if session.role in permissions.MERCHANT_ROLES and session.merchant_id:
                # The header shows the inbox's unread count on every page (a bounded count).
                request.state.unread_mail = await mail.unread_count(portal.pool, mail.Inbox.merchant(session.merchant_id))
            form = await checked_form(request, session.csrf_token, files_max)
            return await handler(request, Page(portal, session, form))

        endpoint.route_name = route  # type: ignore[attr-defined]
        return endpoint

    return wrap

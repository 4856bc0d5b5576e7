"""The portal's ASGI application: routes, middleware, templates, error pages.

``create_app(settings, pool)`` builds it over an existing asyncpg pool (the
caller owns the pool and closes it); portal.server runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import jinja2
import structlog
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ledger.engine import Ledger, LedgerSettings
from ledger.loyalty.mall import Mall, sweep_forever
from ledger.loyalty.operations import Loyalty
from ledger.standby_reads import StandbyReads
from portal import i18n, images, labels, mail_sender, permissions, security_headers
from portal.api import app as api_app
from portal.i18n import N_
from portal.member_web import member_menu
from portal.pages import (
    audit_log,
    auth,
    bins,
    exchange_rates,
    feedback,
    fees,
    mail,
    mall,
    member_account,
    member_community,
    member_exchange,
    member_mall,
    member_pages,
    member_vouchers,
    members,
    merchants,
    operators,
    profile,
    programs,
    promotions,
    revenue,
    seat,
    settlement,
    stats,
    terminals,
    transaction_detail,
    transactions,
)
from portal.sessions import SessionStore
from portal.settings import PortalSettings
from portal.web import Portal, render

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
log = structlog.get_logger("portal")

# Each pages module lists its own routes (ROUTES: path, endpoint, methods, name); one entry here each.
PAGES = (images, auth, merchants, operators, profile, transactions, transaction_detail, seat, members, terminals,
         stats, settlement, audit_log, programs, fees, bins, member_account, member_pages, mall, member_mall,
         promotions, feedback, mail, member_community, member_vouchers, revenue, exchange_rates, member_exchange)
ROUTES: list[tuple[str, Any, list[str], str]] = [route for module in PAGES for route in module.ROUTES]

_ERROR_TEXT = {
    400: N_("The request was not understood."),
    403: N_("You may not do this."),
    404: N_("Not found."),
    405: N_("Not found."),
    413: N_("The request is too large."),
    503: N_("This page is not available: the portal runs without the ledger's settings."),
}


def _templates(app: Starlette) -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"])
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(i18n.template_globals())
    env.globals.update({
        "url": lambda name, **params: str(app.url_path_for(name, **params)),
        "allowed": permissions.allowed, "role_label": labels.role_label, "status_label": labels.status_label,
        "lang_url": _lang_url, "unread_mail": _unread_mail, "member_menu": member_menu,
    })
    return Jinja2Templates(env=env)


def _unread_mail(request: Request) -> int:
    """The unread count of the page's user's inbox (set by portal.web.page), 0 when none."""
    return int(getattr(request.state, "unread_mail", 0) or 0)


def _lang_url(request: Request, code: str) -> str:
    """This page (path and query) in another language."""
    url = URL(str(request.url)).include_query_params(lang=code)
    return f"{url.path}?{url.query}"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = _ERROR_TEXT.get(exc.status_code, N_("The request failed."))
    if exc.status_code == 403 and exc.detail == "csrf":
        message = N_("The form has expired. Go back, reload the page and try again.")
    elif exc.status_code == 400 and exc.detail == "pan-in-url":
        message = N_("A card number is accepted only from the search form, never in a link.")
    status = 404 if exc.status_code == 405 else exc.status_code
    return render(request, "error.html", {"status": status, "message": i18n.gettext(message)}, status_code=status)


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (no request data in it); the browser gets one line.
    log.error("portal_error", path=request.url.path, error=type(exc).__name__)
    response = PlainTextResponse("Internal error; the operator has been told.\n", status_code=500)
    security_headers.add_headers(response.headers)
    return response


def create_app(settings: PortalSettings, pool: asyncpg.Pool, ledger_settings: LedgerSettings | None = None,
               master_key: bytes | None = None, reads: StandbyReads | None = None) -> Starlette:
    """The portal over ``pool``; ``settings.secret`` must be set (settings.check()).

    ``ledger_settings`` (the configuration's ``[ledger]``, as the daemon builds them) give
    the web trading seat its posting engine, started and drained with the application
    (its lifespan); without them the seat answers that it is not available.
    ``master_key`` (the daemon's, from ``[security]``) seals terminals' MAC keys; without
    it the terminal pages add and key no keyed terminal. ``reads``: where the read pages
    (search, statistics, exports) read; the primary's ``pool`` without it.
    """
    settings.check()
    i18n.load_catalogs()
    routes: list[Route | Mount] = [Route(path, endpoint, methods=methods, name=name)
                                   for path, endpoint, methods, name in ROUTES]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    api = api_app.create_api()
    routes.append(Mount(api_app.PREFIX, app=api, name="api"))
    ledger = Ledger(pool, ledger_settings) if ledger_settings is not None else None
    loyalty = Loyalty(ledger, pool, exchange_settings=settings.exchange) if ledger is not None else None
    orders = Mall(loyalty, pool, settings.mall) if loyalty is not None else None
    # E-mail copies of in-platform mail: a background sender when SMTP is configured.
    sender = None
    if settings.smtp_host:
        sender = mail_sender.MailSender(pool, mail_sender.SmtpSettings(
            host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from,
            starttls=settings.smtp_starttls, username=settings.smtp_username,
            password=mail_sender.read_password(settings.smtp_password_file), timeout_s=settings.smtp_timeout_s,
            attempts_max=settings.smtp_attempts_max))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        sweeper: asyncio.Task[None] | None = None
        if ledger is not None:
            await ledger.start()
        if orders is not None:
            # Orders not confirmed in time are cancelled, interrupted ones finished (ledger/loyalty/mall.py).
            sweeper = asyncio.create_task(sweep_forever(orders), name="mall-sweeper")
        if sender is not None:
            await sender.start()
        try:
            yield
        finally:
            if sender is not None:
                await sender.stop()
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            if ledger is not None:
                await ledger.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(security_headers.SecurityHeadersMiddleware),
            Middleware(i18n.LocaleMiddleware, default=settings.default_locale),
            Middleware(security_headers.BodyLimitMiddleware, limit_bytes=settings.request_body_max_bytes,
                       upload_limit_bytes=settings.image_size_max_bytes + images.UPLOAD_OVERHEAD_BYTES,
                       is_upload=images.is_upload_path),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.portal = Portal(settings, pool, SessionStore(pool, settings), _templates(app),
                              loyalty=loyalty, master_key=master_key, mall=orders,
                              reads=reads or StandbyReads(pool, None, 0.0))
    api_app.attach(api, app.state.portal)
    app.state.mail_sender = sender
    return app

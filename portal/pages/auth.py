"""Login, logout, changing one's own password, and the home page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from portal import audit, csrf, throttle, users
from portal.i18n import gettext as _
from portal.passwords import verify_password_async
from portal.sessions import end_user_sessions
from portal.web import FORM, GET, POST, Page, page, portal_of, redirect, render, safe_next

LOGIN_FIELD_MAX = 64
PASSWORD_FIELD_MAX = 1024  # longer than any allowed password; bounds the hashing work


def _client_address(request: Request) -> str:
    # Behind a trusted proxy uvicorn has already put the forwarded address here.
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, message: str | None, next_path: str, status_code: int = 200) -> Response:
    portal = portal_of(request)
    value = request.cookies.get(csrf.PRELOGIN_COOKIE) or csrf.new_prelogin_value()
    response = render(request, "login.html", {
        "message": message, "next": next_path,
        "login_token": csrf.prelogin_token(portal.settings.secret, value)}, status_code=status_code)
    secure = portal.settings.tls or request.url.scheme == "https"
    response.set_cookie(csrf.PRELOGIN_COOKIE, value, path="/", secure=secure, httponly=True, samesite="lax")
    return response


async def login(request: Request) -> Response:
    """GET: the login form. POST: check throttles, then the password; a new session on success."""
    if request.method == "GET":
        return _login_page(request, None, safe_next(request.query_params.get("next")))
    portal = portal_of(request)
    form = await request.form(max_files=0, max_fields=10)
    next_path = safe_next(str(form.get("next") or ""))
    cookie = request.cookies.get(csrf.PRELOGIN_COOKIE)
    if not cookie or not csrf.matches(csrf.prelogin_token(portal.settings.secret, cookie), form.get(csrf.FIELD)):
        return _login_page(request, _("The form has expired. Please try again."), next_path, 400)
    login_name = str(form.get("login") or "").strip().lower()[:LOGIN_FIELD_MAX]
    password = str(form.get("password") or "")[:PASSWORD_FIELD_MAX]
    address = _client_address(request)
    settings = portal.settings
    failed = _("Login failed: wrong login or password, or too many attempts. Try again later.")
    pool = portal.pool
    if await throttle.address_locked(pool, address):
        return _login_page(request, failed, next_path, 401)
    user = await users.find_for_login(pool, login_name)
    if user is not None and user["locked"]:
        await throttle.record_failure(pool, address, settings)
        return _login_page(request, failed, next_path, 401)
    ok = await verify_password_async(user["password_hash"] if user else None, password)
    if not ok or user is None or user["disabled"]:
        await throttle.record_failure(pool, address, settings)
        if user is not None:
            await users.record_login_failure(pool, user["id"], settings.login_account_failures_max,
                                             settings.login_lockout_s)
        return _login_page(request, failed, next_path, 401)
    # A new token at every login: whatever session id the browser had before is not reused.
    await portal.sessions.end(portal.sessions.token_of(request))
    async with pool.acquire() as conn, conn.transaction():
        await users.record_login_success(conn, user["id"])
        token = await portal.sessions.create(conn, user["id"])
    response = redirect(next_path)
    portal.sessions.set_cookie(request, response, token)
    response.delete_cookie(csrf.PRELOGIN_COOKIE, path="/")
    return response


@page("logout")
async def logout(request: Request, pg: Page) -> Response:
    """End the session on the server and drop the cookie."""
    await pg.portal.sessions.end(pg.portal.sessions.token_of(request))
    response = redirect("/login")
    pg.portal.sessions.clear_cookie(request, response)
    return response


@page("password")
async def password(request: Request, pg: Page) -> Response:
    """Change one's own password (forced at first login after someone else set it)."""
    if request.method == "GET":
        return render(request, "password.html", {"message": None}, session=pg.session)
    current, new, again = (pg.field(n, PASSWORD_FIELD_MAX) for n in ("current", "new", "again"))
    async with pg.pool.acquire() as conn:
        user = await users.find_for_login(conn, pg.session.login)
        message = None
        if user is None or not await verify_password_async(user["password_hash"], current):
            message = _("The current password is wrong.")
        elif new != again:
            message = _("The new passwords differ.")
        elif new == current:
            message = _("The new password must differ from the current one.")
        else:
            try:
                async with conn.transaction():
                    await users.set_password(conn, pg.session.user_id, pg.session.login, new, by_self=True)
                    # Every other session of this user ends; this one is replaced by a new token.
                    await end_user_sessions(conn, pg.session.user_id)
                    token = await pg.portal.sessions.create(conn, pg.session.user_id)
                    await audit.record(conn, pg.actor, pg.session.user_id, "password_change", "user",
                                       str(pg.session.user_id), pg.session.merchant_id, None, None)
            except users.UserError as exc:
                message = _(str(exc))
            else:
                response = redirect("/?changed=1")
                pg.portal.sessions.set_cookie(request, response, token)
                return response
    return render(request, "password.html", {"message": message}, status_code=400, session=pg.session)


@page("home")
async def home(request: Request, pg: Page) -> Response:
    """The start page: what this user can do."""
    return render(request, "home.html", {"changed": request.query_params.get("changed") == "1"},
                  session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/", home, GET, "home"),
    ("/login", login, FORM, "login"),
    ("/logout", logout, POST, "logout"),
    ("/password", password, FORM, "password"),
]

"""The member's way in: log in, log out, activate with a code, change the password; the home page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty.member_accounts import member_balances
from portal import csrf, member_auth
from portal.i18n import gettext as _
from portal.member_web import MemberPage, home_context, member_next, member_page, member_sessions
from portal.web import FORM, GET, POST, portal_of, redirect, render

LOGIN_FIELD_MAX = member_auth.IDENTIFIER_CHARS_MAX
PASSWORD_FIELD_MAX = member_auth.PASSWORD_CHARS_MAX


def client_address(request: Request) -> str:
    """The client's address (behind a trusted proxy uvicorn has already put the forwarded one here)."""
    return request.client.host if request.client else "unknown"


def _prelogin_page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A form shown without a session: its CSRF token is bound to a pre-login cookie."""
    portal = portal_of(request)
    value = request.cookies.get(csrf.PRELOGIN_COOKIE) or csrf.new_prelogin_value()
    response = render(request, template, {
        **context, "login_token": csrf.prelogin_token(portal.settings.secret, value)}, status_code=status_code)
    secure = portal.settings.tls or request.url.scheme == "https"
    response.set_cookie(csrf.PRELOGIN_COOKIE, value, path="/", secure=secure, httponly=True, samesite="lax")
    return response


def _prelogin_ok(request: Request, form: Any) -> bool:
    cookie = request.cookies.get(csrf.PRELOGIN_COOKIE)
    return bool(cookie) and csrf.matches(csrf.prelogin_token(portal_of(request).settings.secret, str(cookie)),
                                         form.get(csrf.FIELD))


async def _start_session(request: Request, member_id: int, next_path: str) -> Response:
    portal = portal_of(request)
    store = member_sessions(portal)
    # A new token at every login: whatever session id the browser had before is not reused.
    await store.end(store.token_of(request))
    async with portal.pool.acquire() as conn, conn.transaction():
        token = await store.create(conn, member_id)
    response = redirect(next_path)
    store.set_cookie(request, response, token)
    response.delete_cookie(csrf.PRELOGIN_COOKIE, path="/")
    return response


async def member_login(request: Request) -> Response:
    """GET: the login form. POST: card number or phone and password; a new member session on success."""
    if request.method == "GET":
        return _prelogin_page(request, "member/login.html",
                              {"message": None, "next": member_next(request.query_params.get("next"))})
    portal = portal_of(request)
    form = await request.form(max_files=0, max_fields=10)
    next_path = member_next(str(form.get("next") or ""))
    if not _prelogin_ok(request, form):
        return _prelogin_page(request, "member/login.html",
                              {"message": _("The form has expired. Please try again."), "next": next_path}, 400)
    found = await member_auth.authenticate(
        portal.pool, str(form.get("login") or "")[:LOGIN_FIELD_MAX], str(form.get("password") or ""),
        client_address(request), portal.settings)
    if found is None:
        message = _("Login failed: wrong card number, phone or password, or too many attempts. Try again later.")
        return _prelogin_page(request, "member/login.html", {"message": message, "next": next_path}, 401)
    return await _start_session(request, found.member_id, next_path)


async def member_activate(request: Request) -> Response:
    """GET: the activation form. POST: card number or phone, the one-time code, a new password."""
    if request.method == "GET":
        return _prelogin_page(request, "member/activate.html", {"message": None})
    portal = portal_of(request)
    form = await request.form(max_files=0, max_fields=10)
    if not _prelogin_ok(request, form):
        return _prelogin_page(request, "member/activate.html",
                              {"message": _("The form has expired. Please try again.")}, 400)
    new, again = (str(form.get(n) or "")[:PASSWORD_FIELD_MAX] for n in ("new", "again"))
    if new != again:
        return _prelogin_page(request, "member/activate.html", {"message": _("The new passwords differ.")}, 400)
    try:
        member_id = await member_auth.activate(
            portal.pool, str(form.get("login") or "")[:LOGIN_FIELD_MAX], str(form.get("code") or "")[:64], new,
            client_address(request), portal.settings)
    except member_auth.MemberAuthError as exc:
        return _prelogin_page(request, "member/activate.html", {"message": _(str(exc))}, 400)
    if member_id is None:
        message = _("Activation failed: wrong card number, phone or code, the code has expired or was used, "
                    "or too many attempts. Try again later.")
        return _prelogin_page(request, "member/activate.html", {"message": message}, 401)
    return await _start_session(request, member_id, "/member")


@member_page("member_logout")
async def member_logout(request: Request, pg: MemberPage) -> Response:
    """End the member's session on the server and drop the cookie."""
    store = member_sessions(pg.portal)
    await store.end(store.token_of(request))
    response = redirect("/member/login")
    store.clear_cookie(request, response)
    return response


@member_page("member_password")
async def member_password(request: Request, pg: MemberPage) -> Response:
    """Change one's own password (forced at first login when someone else set it)."""
    if request.method == "GET":
        return render(request, "member/password.html", {"message": None}, session=pg.session)
    current, new, again = (pg.field(n, PASSWORD_FIELD_MAX) for n in ("current", "new", "again"))
    message = None
    if not await member_auth.check_password(pg.pool, pg.member_id, current):
        message = _("The current password is wrong.")
    elif new != again:
        message = _("The new passwords differ.")
    elif new == current:
        message = _("The new password must differ from the current one.")
    else:
        store = member_sessions(pg.portal)
        try:
            async with pg.pool.acquire() as conn, conn.transaction():
                await member_auth.set_password(conn, pg.member_id, new, by_self=True)
                # Every other session of this member ends; this one is replaced by a new token.
                await member_auth.end_member_sessions(conn, pg.member_id)
                token = await store.create(conn, pg.member_id)
        except member_auth.MemberAuthError as exc:
            message = _(str(exc))
        else:
            response = redirect("/member?changed=1")
            store.set_cookie(request, response, token)
            return response
    return render(request, "member/password.html", {"message": message}, status_code=400,
                  session=pg.session)


@member_page("member_home")
async def member_home(request: Request, pg: MemberPage) -> Response:
    """The member's start page: balances of every card."""
    return render(request, "member/home.html", {
        **await home_context(pg.pool, pg.member_id),
        "changed": request.query_params.get("changed") == "1",
        "balances": await member_balances(pg.pool, pg.member_id)}, session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/member", member_home, GET, "member_home"),
    ("/member/login", member_login, FORM, "member_login"),
    ("/member/activate", member_activate, FORM, "member_activate"),
    ("/member/logout", member_logout, POST, "member_logout"),
    ("/member/password", member_password, FORM, "member_password"),
]

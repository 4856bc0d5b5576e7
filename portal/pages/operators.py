"""Operators (portal users): list, view, add, disable and enable, reset password.

The platform's admin manages every user; a merchant's admin only its merchant's,
and a user id of another merchant answers 404 as if it did not exist.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal import audit, users
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.permissions import GRANTS, Role
from portal.web import FORM, GET, POST, Page, page, redirect, render


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else None


async def _user_or_404(pg: Page, raw_id: str) -> dict[str, Any]:
    user_id = _int(raw_id)
    user = await users.get_user(pg.pool, user_id) if user_id is not None else None
    if user is None:
        raise HTTPException(404)
    pg.require_visible(user["merchant_id"])
    return user


@page("operators")
async def operator_list(request: Request, pg: Page) -> Response:
    """Users by id, a page at a time: a merchant's admin sees its merchant's only."""
    own = pg.own_merchant()
    merchant_filter = own or (request.query_params.get("merchant") or None)
    result = await users.list_users(pg.pool, merchant_filter, only_merchant=own is not None,
                                    after_id=_int(request.query_params.get("after")),
                                    limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "operators/list.html", {"users": result["users"], "next_url": next_url,
                                                   "merchant_filter": merchant_filter or ""}, session=pg.session)


@page("operator_view")
async def operator_view(request: Request, pg: Page) -> Response:
    """One user with the forms to disable, enable and reset its password."""
    user = await _user_or_404(pg, request.path_params["user_id"])
    can_manage = user["role"] in GRANTS[Role(pg.session.role)] and user["id"] != pg.session.user_id
    return render(request, "operators/view.html", {"user": user, "can_manage": can_manage,
                                                   "message": None}, session=pg.session)


@page("operator_new")
async def operator_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: add a user with a temporary password it must change at first login."""
    grants = GRANTS[Role(pg.session.role)]
    values = {"login": "", "display_name": "", "role": grants[-1].value, "merchant_id": pg.own_merchant() or ""}
    if request.method == "GET":
        return render(request, "operators/form.html", {"values": values, "roles": grants, "error": None},
                      session=pg.session)
    values = {k: pg.field(k, 100) for k in values}
    values["login"] = values["login"].lower()
    if pg.own_merchant() is not None:
        values["merchant_id"] = pg.own_merchant() or ""
    try:
        if values["role"] not in grants:
            raise users.UserError(N_("Unknown role."))
        merchant_id = values["merchant_id"] if values["role"].startswith("merchant_") else None
        async with pg.pool.acquire() as conn, conn.transaction():
            created = await users.create_user(conn, values["login"], values["display_name"],
                                              pg.field("password", 1024), values["role"], merchant_id)
            await audit.record(conn, pg.actor, pg.session.user_id, "user_add", "user", str(created["id"]),
                               merchant_id, None, created)
    except users.UserError as exc:
        return render(request, "operators/form.html", {"values": values, "roles": grants, "error": _(str(exc))},
                      status_code=400, session=pg.session)
    return redirect(f"/operators/{created['id']}")


def _manageable(pg: Page, user: dict[str, Any]) -> None:
    # Visible but not ours to change (e.g. a merchant admin and the platform's users are never
    # visible together; a user and itself: disabling oneself is refused).
    if user["role"] not in GRANTS[Role(pg.session.role)] or user["id"] == pg.session.user_id:
        raise HTTPException(403)


@page("operator_status")
async def operator_status(request: Request, pg: Page) -> Response:
    """POST: disable (its sessions end) or enable a user."""
    user = await _user_or_404(pg, request.path_params["user_id"])
    _manageable(pg, user)
    disabled = pg.field("disabled", 5) == "1"
    async with pg.pool.acquire() as conn, conn.transaction():
        await users.set_disabled(conn, user["id"], disabled)
        await audit.record(conn, pg.actor, pg.session.user_id, "user_disable" if disabled else "user_enable",
                           "user", str(user["id"]), user["merchant_id"], {"disabled": user["disabled"]},
                           {"disabled": disabled})
    return redirect(f"/operators/{user['id']}")


@page("operator_reset")
async def operator_reset(request: Request, pg: Page) -> Response:
    """POST: give a user a temporary password; it must change it at next login, its sessions end."""
    user = await _user_or_404(pg, request.path_params["user_id"])
    _manageable(pg, user)
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            await users.set_password(conn, user["id"], user["login"], pg.field("password", 1024), by_self=False)
            await audit.record(conn, pg.actor, pg.session.user_id, "user_password_reset", "user", str(user["id"]),
                               user["merchant_id"], None, None)
    except users.UserError as exc:
        return render(request, "operators/view.html", {"user": user, "can_manage": True, "message": _(str(exc))},
                      status_code=400, session=pg.session)
    return redirect(f"/operators/{user['id']}")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/operators", operator_list, GET, "operators"),
    ("/operators/new", operator_new, FORM, "operator_new"),
    ("/operators/{user_id}", operator_view, GET, "operator_view"),
    ("/operators/{user_id}/status", operator_status, POST, "operator_status"),
    ("/operators/{user_id}/reset", operator_reset, POST, "operator_reset"),
]

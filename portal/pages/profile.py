"""A merchant's own profile: its terms (read only) and its description and contacts."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import merchants as ledger_merchants
from ledger.loyalty.programs import ProvisioningError
from portal import audit
from portal.pages.merchants import fees_text
from portal.web import FORM, GET, Page, page, redirect, render

FIELDS = tuple(ledger_merchants.PROFILE_LIMITS)


async def _own(pg: Page) -> dict:
    merchant_id = pg.own_merchant()
    found = await ledger_merchants.show_merchant(pg.pool, merchant_id) if merchant_id else None
    if found is None:
        raise HTTPException(404)
    return found


@page("profile")
async def profile(request: Request, pg: Page) -> Response:
    """The merchant's id, program, earn rate, fees, description and contacts."""
    merchant = await _own(pg)
    return render(request, "profile/view.html", {"m": merchant, "fees": fees_text(merchant["fee_bps"])},
                  session=pg.session)


@page("profile_edit")
async def profile_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: set description and contacts (ledger.loyalty.merchants.set_merchant_profile)."""
    merchant = await _own(pg)
    values = {k: merchant[k] for k in FIELDS}
    if request.method == "GET":
        return render(request, "profile/form.html", {"values": values, "error": None}, session=pg.session)
    values = {k: pg.field(k, ledger_merchants.PROFILE_LIMITS[k] + 1) for k in FIELDS}
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            await ledger_merchants.set_merchant_profile(conn, merchant["merchant_id"], values)
            await audit.record(conn, pg.actor, pg.session.user_id, "merchant_profile", "merchant",
                               merchant["merchant_id"], merchant["merchant_id"],
                               {k: merchant[k] for k in FIELDS}, values)
    except ProvisioningError as exc:
        return render(request, "profile/form.html", {"values": values, "error": str(exc)}, status_code=400,
                      session=pg.session)
    return redirect("/profile")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/profile", profile, GET, "profile"),
    ("/profile/edit", profile_edit, FORM, "profile_edit"),
]

"""Fee schedules per merchant: the list (keyset pages by merchant id) and the edit form.

A schedule is a default rate and rates per transaction type, in basis points; it is
changed through ledger.loyalty.merchants.update_merchant (the merchant's name and
earn rate kept), with an audit entry in the same transaction.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import merchants as ledger_merchants
from ledger.loyalty.programs import ProvisioningError
from portal import audit
from portal.pages.merchants import fees_text, parse_fees_text
from portal.web import FORM, GET, Page, page, redirect, render


@page("fees")
async def fee_list(request: Request, pg: Page) -> Response:
    """Every merchant's fee schedule, by merchant id."""
    q = request.query_params
    result = await ledger_merchants.search_merchants(
        pg.pool, text=q.get("q", "")[:80] or None, after_id=q.get("after", "")[:15] or None,
        limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    rows = [{"m": m, "fees": fees_text(m["fee_bps"])} for m in result["merchants"]]
    return render(request, "platform/fees.html", {"rows": rows, "q": q.get("q", "")[:80], "next_url": next_url,
                                                  "fee_types": ledger_merchants.FEE_TYPES}, session=pg.session)


@page("fee_edit")
async def fee_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: replace the merchant's fee schedule."""
    merchant = await ledger_merchants.show_merchant(pg.pool, request.path_params["merchant_id"][:15])
    if merchant is None:
        raise HTTPException(404)
    context: dict[str, Any] = {"m": merchant, "fees": fees_text(merchant["fee_bps"]), "error": None,
                               "fee_types": ledger_merchants.FEE_TYPES}
    if request.method == "GET":
        return render(request, "platform/fee_form.html", context, session=pg.session)
    context["fees"] = pg.field("fees", 100)
    try:
        fees = parse_fees_text(context["fees"])
        async with pg.pool.acquire() as conn, conn.transaction():
            after = await ledger_merchants.update_merchant(conn, merchant["merchant_id"], merchant["name"],
                                                           merchant["earn_num"], merchant["earn_den"], fees)
            await audit.record(conn, pg.actor, pg.session.user_id, "merchant_fees", "merchant",
                               merchant["merchant_id"], merchant["merchant_id"], {"fee_bps": merchant["fee_bps"]},
                               {"fee_bps": after["fee_bps"] if after else None})
    except (ValueError, ProvisioningError) as exc:
        context["error"] = str(exc)
        return render(request, "platform/fee_form.html", context, status_code=400, session=pg.session)
    return redirect("/fees")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/fees", fee_list, GET, "fees"),
    ("/fees/{merchant_id}", fee_edit, FORM, "fee_edit"),
]

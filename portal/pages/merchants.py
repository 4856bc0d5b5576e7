"""Platform pages for merchants: search and list, view, add, edit, disable and enable.

Every change goes through the ledger's merchant functions (the CLI's), with an
audit entry in the same transaction. Nothing is deleted: a merchant is disabled.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import merchants as ledger_merchants
from ledger.loyalty.programs import ProvisioningError, list_programs
from ledger.loyalty.rules import parse_earn_rate
from portal import audit
from portal.web import FORM, GET, POST, Page, page, redirect, render

STATUSES = ("active", "disabled")


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def fees_text(fee_bps: dict[str, int]) -> str:
    """A fee schedule as the form shows it.

    >>> fees_text({"default": 50, "redeem": 30})
    '50, redeem=30'
    """
    return ", ".join(str(v) if k == "default" else f"{k}={v}" for k, v in fee_bps.items())


def parse_fees_text(text: str) -> dict[str, int]:
    """The form's fee field: ``N`` and ``TYPE=N`` items separated by commas or spaces."""
    items = [i for i in text.replace(",", " ").split() if i][:len(ledger_merchants.FEE_TYPES)]
    return ledger_merchants.parse_fees(items)


@page("merchants")
async def merchant_list(request: Request, pg: Page) -> Response:
    """Combined search: id or name, program, status, creation dates; keyset pages by id."""
    q = request.query_params
    criteria = {"q": q.get("q", "")[:80], "program": q.get("program") or None,
                "status": q.get("status") if q.get("status") in STATUSES else None,
                "created_from": q.get("created_from", "")[:10], "created_to": q.get("created_to", "")[:10]}
    result = await ledger_merchants.search_merchants(
        pg.pool, text=criteria["q"] or None, program=criteria["program"], status=criteria["status"],
        created_from=_date(criteria["created_from"]), created_to=_date(criteria["created_to"]),
        after_id=q.get("after") or None, limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "merchants/list.html", {
        "criteria": criteria, "merchants": result["merchants"], "next_url": next_url,
        "programs": await list_programs(pg.pool), "statuses": STATUSES}, session=pg.session)


async def _merchant_or_404(pg: Page, merchant_id: str) -> dict[str, Any]:
    found = await ledger_merchants.show_merchant(pg.pool, merchant_id[:15])
    if found is None:
        raise HTTPException(404)
    return found


@page("merchant_view")
async def merchant_view(request: Request, pg: Page) -> Response:
    """One merchant: terms, profile, clearing balances."""
    merchant = await _merchant_or_404(pg, request.path_params["merchant_id"])
    return render(request, "merchants/view.html", {"m": merchant, "fees": fees_text(merchant["fee_bps"])},
                  session=pg.session)


@page("merchant_new")
async def merchant_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: add the merchant (ledger.loyalty.merchants.add_merchant)."""
    programs = await list_programs(pg.pool)
    values = {"merchant_id": "", "name": "", "program": "", "earn_rate": "1", "fees": "0"}
    if request.method == "GET":
        return render(request, "merchants/form.html", {"values": values, "programs": programs, "new": True,
                                                        "error": None}, session=pg.session)
    values = {k: pg.field(k, 100) for k in values}
    try:
        num, den = parse_earn_rate(values["earn_rate"])
        fees = parse_fees_text(values["fees"])
        async with pg.pool.acquire() as conn, conn.transaction():
            created = await ledger_merchants.add_merchant(conn, values["merchant_id"], values["name"],
                                                          values["program"], num, den, fees)
            await audit.record(conn, pg.actor, pg.session.user_id, "merchant_add", "merchant",
                               created["merchant_id"], created["merchant_id"], None, created)
    except (ValueError, ProvisioningError) as exc:
        return render(request, "merchants/form.html", {"values": values, "programs": programs, "new": True,
                                                        "error": str(exc)}, status_code=400, session=pg.session)
    return redirect(f"/merchants/{created['merchant_id']}")


@page("merchant_edit")
async def merchant_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: change name, earn rate and fees (ledger.loyalty.merchants.update_merchant)."""
    merchant = await _merchant_or_404(pg, request.path_params["merchant_id"])
    values = {"merchant_id": merchant["merchant_id"], "name": merchant["name"], "program": merchant["program"],
              "earn_rate": merchant["earn_rate"], "fees": fees_text(merchant["fee_bps"])}
    if request.method == "GET":
        return render(request, "merchants/form.html", {"values": values, "new": False, "error": None},
                      session=pg.session)
    values.update({k: pg.field(k, 100) for k in ("name", "earn_rate", "fees")})
    try:
        num, den = parse_earn_rate(values["earn_rate"])
        fees = parse_fees_text(values["fees"])
        async with pg.pool.acquire() as conn, conn.transaction():
            after = await ledger_merchants.update_merchant(conn, merchant["merchant_id"], values["name"], num,
                                                           den, fees)
            await audit.record(conn, pg.actor, pg.session.user_id, "merchant_edit", "merchant",
                               merchant["merchant_id"], merchant["merchant_id"], merchant, after)
    except (ValueError, ProvisioningError) as exc:
        return render(request, "merchants/form.html", {"values": values, "new": False, "error": str(exc)},
                      status_code=400, session=pg.session)
    return redirect(f"/merchants/{merchant['merchant_id']}")


@page("merchant_status")
async def merchant_status(request: Request, pg: Page) -> Response:
    """POST: disable or enable (a disabled merchant's terminals are declined)."""
    merchant = await _merchant_or_404(pg, request.path_params["merchant_id"])
    status = pg.field("status", 10)
    if status not in STATUSES:
        raise HTTPException(400)
    async with pg.pool.acquire() as conn, conn.transaction():
        await ledger_merchants.set_merchant_status(conn, merchant["merchant_id"], status)
        await audit.record(conn, pg.actor, pg.session.user_id, f"merchant_{status}", "merchant",
                           merchant["merchant_id"], merchant["merchant_id"], {"status": merchant["status"]},
                           {"status": status})
    return redirect(f"/merchants/{merchant['merchant_id']}")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/merchants", merchant_list, GET, "merchants"),
    ("/merchants/new", merchant_new, FORM, "merchant_new"),
    ("/merchants/{merchant_id}", merchant_view, GET, "merchant_view"),
    ("/merchants/{merchant_id}/edit", merchant_edit, FORM, "merchant_edit"),
    ("/merchants/{merchant_id}/status", merchant_status, POST, "merchant_status"),
]

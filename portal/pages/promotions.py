"""Promotions and ads: a merchant's list, form and withdrawal; the platform's approval queue;
the merchant's public page (``/m/{merchant_id}``, no login).

Through portal.promotions: a merchant's users see their own (its admin changes them,
its operator reads them); the platform's see all and decide the pending ones. Another
merchant's promotion answers 404.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import NoMatchFound

from ledger.loyalty import merchants as ledger_merchants
from portal import audit, images, promotions
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.refusals import said
from portal.web import FORM, GET, POST, Page, page, portal_of, redirect, render

STATUS_NAMES = {
    "draft": N_("Draft"), "pending": N_("Waiting for approval"), "approved": N_("Approved"),
    "rejected": N_("Rejected"), "withdrawn": N_("Withdrawn"),
}
WINDOW_DAYS_MAX = 366 * 2


def status_name(status: str) -> str:
    """A promotion's status in the request's language."""
    return _(STATUS_NAMES.get(status, status))


def _ledger(pg: Page) -> Any:
    return pg.portal.loyalty.ledger if pg.portal.loyalty is not None else None


async def _own(request: Request, pg: Page) -> dict[str, Any]:
    """The promotion of the path, if this user may see it (else 404)."""
    promotion_id = request.path_params["promotion_id"]
    found = (await promotions.get(pg.pool, promotion_id, pg.own_merchant())) if promotion_id < 2**63 else None
    if found is None:
        raise HTTPException(404)
    pg.require_visible(found["merchant_id"])
    return found


def _after(request: Request) -> int | None:
    value = request.query_params.get("after", "")[:19]
    return int(value) if value.isdigit() else None


@page("promotions")
async def promotion_list(request: Request, pg: Page) -> Response:
    """A merchant's promotions; for the platform, every merchant's (by default the approval queue)."""
    merchant_id = pg.own_merchant()
    default = "" if merchant_id else "pending"
    status = request.query_params.get("status", default)[:10]
    if status not in promotions.STATUSES:
        status = ""
    result = await promotions.search(pg.pool, merchant_id=merchant_id, status=status or None,
                                     after_id=_after(request), limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "promotions/list.html", {
        "items": result["promotions"], "status": status, "statuses": promotions.STATUSES, "next_url": next_url,
        "status_name": status_name, "need_approval": pg.portal.settings.promotions_need_approval,
        "fee_minor": pg.portal.settings.promotion_fee_minor}, session=pg.session)


def _parse_day(value: str, label: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise promotions.PromotionError(_("%(field)s: enter a date as YYYY-MM-DD") % {"field": label}) from None


async def _draft(pg: Page, merchant: dict[str, Any], image_id: int | None) -> promotions.Draft:
    start = _parse_day(pg.field("valid_from", 10), _("Valid from"))
    end = _parse_day(pg.field("valid_until", 10), _("Valid until"))
    if (end - start).days > WINDOW_DAYS_MAX:
        raise promotions.PromotionError(_("A promotion runs for at most two years."))
    # Whole days: from the start of the first to the end of the last (UTC).
    draft = promotions.Draft(
        title=pg.field("title", promotions.TITLE_CHARS_MAX + 1), body=pg.field("body", promotions.BODY_CHARS_MAX + 1),
        valid_from=dt.datetime.combine(start, dt.time(), dt.UTC),
        valid_until=dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC),
        program=merchant["program"] if pg.field("audience", 10) == "program" else None,
        image_id=None if pg.field("image_remove", 3) else image_id)
    draft.check()  # before an upload is stored for nothing
    uploaded = await images.from_form(pg.pool, pg.form, "image", pg.portal.settings.image_size_max_bytes)
    return draft if uploaded is None else dataclasses.replace(draft, image_id=uploaded)


def _values(p: dict[str, Any] | None) -> dict[str, Any]:
    if p is None:
        today = dt.datetime.now(dt.UTC).date()
        return {"title": "", "body": "", "valid_from": today.isoformat(),
                "valid_until": (today + dt.timedelta(days=30)).isoformat(), "audience": "all", "image_id": None}
    return {"title": p["title"], "body": p["body"], "valid_from": p["valid_from"].astimezone(dt.UTC).date().isoformat(),
            "valid_until": (p["valid_until"].astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat(),
            "audience": "program" if p["program"] else "all", "image_id": p["image_id"]}


async def _auto_publish(pg: Page, promotion: dict[str, Any]) -> str | None:
    """Without approval, a submitted promotion is published at once (and its fee charged)."""
    if pg.portal.settings.promotions_need_approval or promotion["status"] != "pending":
        return None
    outcome = await promotions.publish(pg.pool, _ledger(pg), promotion["id"], pg.portal.settings.promotion_fee_minor,
                                       "auto")
    return outcome.problem


def _audit_view(p: dict[str, Any] | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in p.items()
            if k in ("title", "program", "valid_from", "valid_until", "status", "image_id", "fee_minor")}


async def _merchant(pg: Page) -> dict[str, Any]:
    merchant_id = pg.own_merchant()
    found = await ledger_merchants.show_merchant(pg.pool, merchant_id) if merchant_id else None
    if found is None:
        raise HTTPException(404)
    return found


@page("promotion_new", files_max=1)
async def promotion_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: save a draft or submit it (published at once without approval)."""
    merchant = await _merchant(pg)
    context: dict[str, Any] = {"values": _values(None), "error": None, "promotion": None, "merchant": merchant}
    if request.method == "GET":
        return render(request, "promotions/form.html", context, session=pg.session)
    try:
        draft = await _draft(pg, merchant, None)
        async with pg.pool.acquire() as conn, conn.transaction():
            created = await promotions.create(conn, merchant["merchant_id"], draft, pg.actor,
                                              submit=pg.field("action", 10) != "draft")
            await audit.record(conn, pg.actor, pg.session.user_id, "promotion_new", "promotion", str(created["id"]),
                               merchant["merchant_id"], None, _audit_view(created))
    except (promotions.PromotionError, images.ImageError) as exc:
        context["values"] = {**context["values"], "title": pg.field("title", 200), "body": pg.field("body", 2100),
                             "valid_from": pg.field("valid_from", 10), "valid_until": pg.field("valid_until", 10)}
        context["error"] = said(exc)
        return render(request, "promotions/form.html", context, status_code=400, session=pg.session)
    problem = await _auto_publish(pg, created)
    return redirect(f"/promotions/{created['id']}" + ("?problem=fee" if problem else ""))


@page("promotion_view")
async def promotion_view(request: Request, pg: Page) -> Response:
    """One promotion: its text, window, status, review and fee; the platform's decision form."""
    promotion = await _own(request, pg)
    problem = request.query_params.get("problem", "")[:10]
    return render(request, "promotions/view.html", {
        "p": promotion, "status_name": status_name, "fee_minor": pg.portal.settings.promotion_fee_minor,
        "problem": problem in ("fee", "review")}, session=pg.session)


@page("promotion_edit", files_max=1)
async def promotion_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: save; an approved or rejected promotion is submitted again."""
    promotion = await _own(request, pg)
    if promotion["status"] == "withdrawn":
        raise HTTPException(404)
    merchant = await _merchant(pg)
    context: dict[str, Any] = {"values": _values(promotion), "error": None, "promotion": promotion,
                               "merchant": merchant}
    if request.method == "GET":
        return render(request, "promotions/form.html", context, session=pg.session)
    try:
        draft = await _draft(pg, merchant, promotion["image_id"])
        async with pg.pool.acquire() as conn, conn.transaction():
            after = await promotions.update(conn, promotion["id"], merchant["merchant_id"], draft,
                                            submit=pg.field("action", 10) != "draft")
            if after is None:
                raise HTTPException(404)
            await audit.record(conn, pg.actor, pg.session.user_id, "promotion_edit", "promotion", str(promotion["id"]),
                               merchant["merchant_id"], _audit_view(promotion), _audit_view(after))
    except (promotions.PromotionError, images.ImageError) as exc:
        context["error"] = said(exc)
        return render(request, "promotions/form.html", context, status_code=400, session=pg.session)
    problem = await _auto_publish(pg, after)
    return redirect(f"/promotions/{promotion['id']}" + ("?problem=fee" if problem else ""))


@page("promotion_delete")
async def promotion_delete(request: Request, pg: Page) -> Response:
    """Withdraw a promotion (unpublished at once; the record stays)."""
    promotion = await _own(request, pg)
    async with pg.pool.acquire() as conn, conn.transaction():
        if await promotions.withdraw(conn, promotion["id"], pg.own_merchant()):
            await audit.record(conn, pg.actor, pg.session.user_id, "promotion_withdraw", "promotion",
                               str(promotion["id"]), promotion["merchant_id"], _audit_view(promotion),
                               {"status": "withdrawn"})
    return redirect(f"/promotions/{promotion['id']}")


@page("promotion_review")
async def promotion_review(request: Request, pg: Page) -> Response:
    """The platform approves (publishing it, charging the placement fee once) or rejects a pending promotion."""
    promotion = await _own(request, pg)
    decision = pg.field("decision", 10)
    if decision not in ("approve", "reject"):
        raise HTTPException(400)
    outcome = await promotions.publish(pg.pool, _ledger(pg), promotion["id"], pg.portal.settings.promotion_fee_minor,
                                       pg.actor, note=pg.field("note", promotions.NOTE_CHARS_MAX),
                                       approve=decision == "approve")
    if outcome.problem is None:
        async with pg.pool.acquire() as conn:
            await audit.record(conn, pg.actor, pg.session.user_id, f"promotion_{decision}", "promotion",
                               str(promotion["id"]), promotion["merchant_id"], _audit_view(promotion),
                               _audit_view(outcome.promotion))
    return redirect(f"/promotions/{promotion['id']}" + ("?problem=review" if outcome.problem else ""))


async def merchant_public(request: Request) -> Response:
    """``/m/{merchant_id}``, no login: the merchant's name, description, published promotions, goods."""
    portal = portal_of(request)
    merchant_id = request.path_params["merchant_id"][:15]
    merchant = await ledger_merchants.show_merchant(portal.pool, merchant_id)
    if merchant is None or merchant["status"] != "active":
        raise HTTPException(404)
    result = await promotions.list_published(portal.pool, merchant_id=merchant_id,
                                             limit=portal.settings.page_size_default)
    try:  # the points mall's goods of this merchant (members log in to order), when this portal has the mall
        goods_url: str | None = f"{request.app.url_path_for('member_mall')}?merchant={quote(merchant_id)}"
    except NoMatchFound:
        goods_url = None
    return render(request, "promotions/public.html", {"m": merchant, "promotions": result["promotions"],
                                                      "goods_url": goods_url})


async def promotions_for_member(conn: Any, member_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The published promotions a member sees, for ``promotions/_member_list.html`` (``promotions``)."""
    return await promotions.promotions_for_member(conn, member_id, limit)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/promotions", promotion_list, GET, "promotions"),
    ("/promotions/new", promotion_new, FORM, "promotion_new"),
    ("/promotions/{promotion_id:int}", promotion_view, GET, "promotion_view"),
    ("/promotions/{promotion_id:int}/edit", promotion_edit, FORM, "promotion_edit"),
    ("/promotions/{promotion_id:int}/delete", promotion_delete, POST, "promotion_delete"),
    ("/promotions/{promotion_id:int}/review", promotion_review, POST, "promotion_review"),
    ("/m/{merchant_id}", merchant_public, GET, "merchant_public"),
]

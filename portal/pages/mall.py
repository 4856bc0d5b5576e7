"""The points mall, merchant side: goods (list, add, edit, disable, with an image) and orders
(list by status, detail, an order taken by phone, address, confirm, ship, complete, cancel, refund).

A merchant's users (admin and operator) manage their own merchant's goods and orders; the
platform's users read every merchant's. Another merchant's good or order answers 404, as one
that does not exist. Value moves only through :class:`ledger.loyalty.mall.Mall`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import mall as ledger_mall
from ledger.loyalty import members as ledger_members
from ledger.loyalty.mall import GoodForm, Mall, MallError
from ledger.loyalty.programs import KNOWN_CURRENCIES
from ledger.loyalty.seat import new_request_id
from portal import audit, images
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.pages.seat import BadForm, parse_amount
from portal.web import FORM, GET, POST, Page, page, redirect, render

ID_MAX = 2**63 - 1
ORDER_STATUS_NAMES = {
    "placing": N_("Being placed"), "placed": N_("Placed"), "rejected": N_("Rejected"),
    "confirmed": N_("Confirmed"), "shipped": N_("Shipped"), "completed": N_("Completed"),
    "cancelled": N_("Cancelled"), "refunded": N_("Refunded"),
}
GOOD_STATUS_NAMES = {"active": N_("On offer"), "disabled": N_("Disabled")}
# Why a mall operation did nothing, for people (MallError.code).
ERROR_WORDS = {
    "not_found": N_("Not found."),
    "not_available": N_("This good is not offered now."),
    "out_of_stock": N_("Not enough left in stock."),
    "insufficient": N_("Not enough points or stored value."),
    "invalid_state": N_("The order is not in a state that allows this."),
    "invalid": N_("The request is not valid."),
    "card_blocked": N_("The card is blocked or has expired."),
    "system": N_("Not done: the system could not be reached. Try again."),
}
IMAGE_WORDS = {
    "empty": N_("The image file is empty."),
    "too_large": N_("The image is larger than %(kib)s KiB."),
    "type": N_("The image must be a PNG, JPEG, GIF or WebP file."),
}
# The merchant's buttons on an order: (action, label) offered in each status.
ACTIONS = {"placed": (("confirm", N_("Confirm")),), "confirmed": (("ship", N_("Mark shipped")),),
           "shipped": (("complete", N_("Mark completed")),)}


def order_status_name(status: str) -> str:
    """An order's status in the request's language."""
    return _(ORDER_STATUS_NAMES[status]) if status in ORDER_STATUS_NAMES else status


def good_status_name(status: str) -> str:
    """A good's status in the request's language."""
    return _(GOOD_STATUS_NAMES[status]) if status in GOOD_STATUS_NAMES else status


def error_words(exc: MallError) -> str:
    """A mall error in the request's language, with its detail when the words are general."""
    words = _(ERROR_WORDS.get(exc.code, ERROR_WORDS["invalid"]))
    return f"{words} ({exc})" if exc.code in ("invalid", "invalid_state", "system") else words


def mall_of(pg: Page) -> Mall:
    """The mall's orders; 503 when the portal runs without ledger settings."""
    if pg.portal.mall is None:
        raise HTTPException(503, "seat-off")
    return pg.portal.mall


def _scale(currency: str | None) -> int:
    return KNOWN_CURRENCIES.get(currency or "", ("", 2))[1]


def _id(request: Request, name: str) -> int:
    value = request.path_params[name]
    if not 0 < value <= ID_MAX:
        raise HTTPException(404)
    return int(value)


async def _visible_good(pg: Page, good_id: int) -> dict[str, Any]:
    good = await ledger_mall.get_good(pg.pool, good_id)
    if good is None:
        raise HTTPException(404)
    pg.require_visible(good["merchant_id"])
    return good


async def _visible_order(pg: Page, order_id: int) -> dict[str, Any]:
    order = await ledger_mall.get_order(pg.pool, order_id, merchant_id=pg.own_merchant())
    if order is None:
        raise HTTPException(404)
    return order


def _own(pg: Page) -> str:
    merchant_id = pg.own_merchant()
    if merchant_id is None:  # the rules give changes to a merchant's users only
        raise HTTPException(403)
    return merchant_id


# ---------------------------------------------------------------- goods


@page("mall_goods")
async def goods_list(request: Request, pg: Page) -> Response:
    """The merchant's goods (the platform: every merchant's, or one's; by program; only those on
    offer now), by id, keyset pages."""
    q = request.query_params
    merchant_id = pg.own_merchant() or (q.get("merchant", "")[:15] or None)
    program = q.get("program", "")[:20] or None
    available = q.get("available") == "1"
    after = q.get("after", "")
    result = await ledger_mall.list_goods(
        pg.pool, merchant_id=merchant_id, program=program, available_only=available,
        after_id=int(after) if after.isascii() and after.isdigit() and len(after) <= 18 else None,
        limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "mall/goods.html", {"goods": result["goods"], "next_url": next_url,
                                               "merchant": merchant_id or "", "program": program or "",
                                               "available": available, "status_name": good_status_name},
                  session=pg.session)


def _good_values(good: dict[str, Any] | None) -> dict[str, str]:
    if good is None:
        return {"name": "", "description": "", "price_points": "", "price": "", "stock": "0", "valid_from": "",
                "valid_until": ""}
    scale = _scale(good["currency"])
    return {"name": good["name"], "description": good["description"],
            "price_points": str(good["price_points"] or ""),
            "price": str(ledger_price(good["price_minor"], scale)) if good["price_minor"] else "",
            "stock": str(good["stock"]),
            "valid_from": good["valid_from"].date().isoformat() if good["valid_from"] else "",
            "valid_until": good["valid_until"].date().isoformat() if good["valid_until"] else ""}


def ledger_price(minor: int, scale: int) -> str:
    """Minor units as the form shows them.

    >>> ledger_price(1250, 2), ledger_price(7, 0)
    ('12.50', '7')
    """
    return f"{minor / 10**scale:.{scale}f}" if scale else str(minor)


def _date(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
    except ValueError:
        raise BadForm(N_("A date is written as 2026-12-31.")) from None


def _good_form(pg: Page, values: dict[str, str], currency: str | None) -> GoodForm:
    points = values["price_points"].replace(",", "")
    stock = values["stock"].replace(",", "")
    if (points and not (points.isascii() and points.isdigit())) or not (stock.isascii() and stock.isdigit()):
        raise BadForm(N_("Points and stock are whole numbers."))
    return GoodForm(name=values["name"], description=pg.field("description", 4000),
                    price_points=int(points) if points else None,
                    price_minor=parse_amount(values["price"], False, _scale(currency)),
                    stock=int(stock), valid_from=_date(values["valid_from"]), valid_until=_date(values["valid_until"]))


async def _save_good(request: Request, pg: Page, good: dict[str, Any] | None) -> Response:
    merchant_id = _own(pg)
    currency = good["currency"] if good else await pg.pool.fetchval(
        "SELECT p.currency FROM loyalty.merchants m JOIN loyalty.programs p ON p.code = m.program "
        "WHERE m.merchant_id = $1", merchant_id)
    values = _good_values(good)
    if request.method == "POST":
        values = {k: pg.field(k, 4000 if k == "description" else 120) for k in values}
        try:
            form = _good_form(pg, values, currency)
            image_id = await images.from_form(pg.pool, pg.form, "image", pg.portal.settings.image_size_max_bytes)
            async with pg.pool.acquire() as conn, conn.transaction():
                if good is None:
                    good_id = await ledger_mall.add_good(conn, merchant_id, form, image_id)
                else:
                    good_id = good["id"]
                    await ledger_mall.edit_good(conn, good_id, merchant_id, form, image_id)
                await audit.record(conn, pg.actor, pg.session.user_id, "good_add" if good is None else "good_edit",
                                   "good", str(good_id), merchant_id, None,
                                   {k: v for k, v in values.items() if k != "description"} | {"image_id": image_id})
            return redirect(f"/mall/goods/{good_id}")
        except BadForm as exc:
            error = _(str(exc))
        except images.ImageError as exc:
            error = _(IMAGE_WORDS.get(exc.code, IMAGE_WORDS["type"])) % {
                "kib": pg.portal.settings.image_size_max_bytes // 1024}
        except MallError as exc:
            error = error_words(exc)
        return render(request, "mall/good_form.html", {"good": good, "values": values, "error": error},
                      status_code=400, session=pg.session)
    return render(request, "mall/good_form.html", {"good": good, "values": values, "error": None},
                  session=pg.session)


@page("mall_good_new", files_max=1)
async def good_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: add a good (with its image, when one is chosen)."""
    return await _save_good(request, pg, None)


@page("mall_good_edit", files_max=1)
async def good_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: change the good (a new image replaces the old one)."""
    return await _save_good(request, pg, await _visible_good(pg, _id(request, "good_id")))


@page("mall_good_view")
async def good_view(request: Request, pg: Page) -> Response:
    """A good: its terms, image and stock."""
    good = await _visible_good(pg, _id(request, "good_id"))
    return render(request, "mall/good_view.html", {"good": good, "status_name": good_status_name},
                  session=pg.session)


@page("mall_good_status")
async def good_status(request: Request, pg: Page) -> Response:
    """POST: offer (``active``) or withdraw (``disabled``) the good."""
    good = await _visible_good(pg, _id(request, "good_id"))
    status = pg.field("status", 10)
    if status not in ledger_mall.GOOD_STATUSES:
        raise HTTPException(400)
    async with pg.pool.acquire() as conn, conn.transaction():
        await ledger_mall.set_good_status(conn, good["id"], _own(pg), status)
        await audit.record(conn, pg.actor, pg.session.user_id, f"good_{status}", "good", str(good["id"]),
                           good["merchant_id"], {"status": good["status"]}, {"status": status})
    return redirect(f"/mall/goods/{good['id']}")


# ---------------------------------------------------------------- orders


@page("mall_orders")
async def orders_list(request: Request, pg: Page) -> Response:
    """The merchant's orders, newest first, by status; keyset pages."""
    q = request.query_params
    status = q.get("status") if q.get("status") in ledger_mall.STATUSES else None
    merchant_id = pg.own_merchant() or (q.get("merchant", "")[:15] or None)
    before = q.get("before", "")
    result = await ledger_mall.list_orders(
        pg.pool, merchant_id=merchant_id, status=status,
        after_id=int(before) if before.isascii() and before.isdigit() and len(before) <= 18 else None,
        limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(before=result["next_after_id"]))
    return render(request, "mall/orders.html", {
        "orders": result["orders"], "next_url": next_url, "status": status or "", "merchant": merchant_id or "",
        "statuses": [(s, order_status_name(s)) for s in ledger_mall.STATUSES], "status_name": order_status_name},
        session=pg.session)


def _order_context(order: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    return {"order": order, "status_name": order_status_name, "error": error,
            "actions": [(a, _(label)) for a, label in ACTIONS.get(order["status"], ())],
            "refund_left": int(order["amount"]) - int(order["refunded_amount"]),
            "scale": _scale(order["currency"]), "request_id": new_request_id()}


@page("mall_order_view")
async def order_view(request: Request, pg: Page) -> Response:
    """An order: the good, the member's card (masked), the amount, its state and what may be done."""
    order = await _visible_order(pg, _id(request, "order_id"))
    card = await ledger_members.member(pg.pool, int(order["card_id"]))
    return render(request, "mall/order_view.html", _order_context(order) | {"card": card}, session=pg.session)


async def _after(request: Request, pg: Page, order: dict[str, Any], call: Any, action: str,
                 detail: dict[str, Any] | None = None) -> Response:
    """Run one transition; back to the order, or the order with the reason it was not done."""
    try:
        after = await call
    except MallError as exc:
        card = await ledger_members.member(pg.pool, int(order["card_id"]))
        fresh = await _visible_order(pg, order["id"])
        return render(request, "mall/order_view.html", _order_context(fresh, error_words(exc)) | {"card": card},
                      status_code=409 if exc.code == "invalid_state" else 400, session=pg.session)
    if after["status"] != order["status"] or action == "refund":  # a transition run again did nothing
        async with pg.pool.acquire() as conn:
            await audit.record(conn, pg.actor, pg.session.user_id, f"order_{action}", "order", str(order["id"]),
                               order["merchant_id"], {"status": order["status"]},
                               {"status": after["status"]} | (detail or {}))
    return redirect(f"/mall/orders/{order['id']}")


@page("mall_order_action")
async def order_action(request: Request, pg: Page) -> Response:
    """POST: confirm (the held amount is taken), ship or complete the order."""
    order = await _visible_order(pg, _id(request, "order_id"))
    mall, merchant_id = mall_of(pg), _own(pg)
    action = pg.field("action", 10)
    calls = {"confirm": lambda: mall.confirm(order["id"], merchant_id, f"portal:{pg.session.login}"[:64]),
             "ship": lambda: mall.ship(order["id"], merchant_id),
             "complete": lambda: mall.complete(order["id"], merchant_id)}
    if action not in calls:
        raise HTTPException(400)
    return await _after(request, pg, order, calls[action](), action)


@page("mall_order_cancel")
async def order_cancel(request: Request, pg: Page) -> Response:
    """POST: cancel a placed order (its hold released) or a confirmed one (refunded in full)."""
    order = await _visible_order(pg, _id(request, "order_id"))
    reason = pg.field("reason", ledger_mall.NOTE_LENGTH_MAX)
    return await _after(request, pg, order, mall_of(pg).cancel(order["id"], by_merchant_id=_own(pg), reason=reason),
                        "cancel", {"reason": reason})


@page("mall_order_refund")
async def order_refund(request: Request, pg: Page) -> Response:
    """POST: refund part or all of what is left of a completed order."""
    order = await _visible_order(pg, _id(request, "order_id"))
    try:
        amount = parse_amount(pg.field("amount", 20), order["pay"] == "points", _scale(order["currency"]))
        problem: str | None = None if amount else _("Say how much to refund.")
    except BadForm as exc:
        amount, problem = None, _(str(exc))
    if problem is not None or amount is None:
        card = await ledger_members.member(pg.pool, int(order["card_id"]))
        return render(request, "mall/order_view.html", _order_context(order, problem) | {"card": card},
                      status_code=400, session=pg.session)
    return await _after(request, pg, order, mall_of(pg).refund(order["id"], _own(pg), amount,
                                                               f"portal:{pg.session.login}"[:64]),
                        "refund", {"amount": amount})


@page("mall_order_edit")
async def order_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: change the delivery address (until the order is shipped)."""
    order = await _visible_order(pg, _id(request, "order_id"))
    if request.method == "GET":
        return render(request, "mall/order_edit.html", {"order": order, "address": order["delivery_address"],
                                                        "error": None}, session=pg.session)
    address = pg.field("delivery_address", ledger_mall.ADDRESS_LENGTH_MAX)
    try:
        await mall_of(pg).set_address(order["id"], _own(pg), None, address)
    except MallError as exc:
        return render(request, "mall/order_edit.html", {"order": order, "address": address,
                                                        "error": error_words(exc)},
                      status_code=409, session=pg.session)
    async with pg.pool.acquire() as conn:
        await audit.record(conn, pg.actor, pg.session.user_id, "order_address", "order", str(order["id"]),
                           order["merchant_id"], {"delivery_address": order["delivery_address"]},
                           {"delivery_address": address})
    return redirect(f"/mall/orders/{order['id']}")


async def _good_merchant(pg: Page, good_id: int) -> str | None:
    if not 0 < good_id <= ID_MAX:
        return None
    value = await pg.pool.fetchval("SELECT merchant_id FROM loyalty.goods WHERE id = $1", good_id)
    return None if value is None else str(value)


@page("mall_order_new")
async def order_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: an order taken by phone for the member whose card number is typed
    in: held from the card like the member's own order, placed under the form's one-time id."""
    merchant_id = _own(pg)
    goods = (await ledger_mall.list_goods(pg.pool, merchant_id=merchant_id, limit=ledger_mall.PAGE_SIZE_MAX))["goods"]
    values = {"good_id": "", "quantity": "1", "pay": "points", "delivery_address": "",
              "request_id": new_request_id()}
    context: dict[str, Any] = {"goods": goods, "values": values, "error": None}
    if request.method == "GET":
        return render(request, "mall/order_new.html", context, session=pg.session)
    values.update({k: pg.field(k, ledger_mall.ADDRESS_LENGTH_MAX) for k in values})
    pan = pg.field("pan", 40).replace(" ", "")
    card_id = await ledger_members.card_id_of(pg.pool, pan) if pan.isascii() and pan.isdigit() else None
    card = await ledger_members.member(pg.pool, card_id) if card_id is not None else None
    good_id, quantity = values["good_id"], values["quantity"]
    if card is None:
        context["error"] = _("No member has that card number.")
    elif not (good_id.isdigit() and len(good_id) <= 18 and quantity.isdigit() and len(quantity) <= 4):
        context["error"] = _("Choose a good and a quantity.")
    elif await _good_merchant(pg, int(good_id)) != merchant_id:
        raise HTTPException(404)  # a good of another merchant: as one that does not exist
    else:
        try:
            order = await mall_of(pg).place(
                int(card["member_id"]), int(card["id"]), int(good_id), int(quantity), values["pay"],
                values["request_id"][:64], "web", values["delivery_address"], taken_by=pg.actor[:100])
        except MallError as exc:
            if exc.order is not None and exc.order["merchant_id"] == merchant_id:
                return redirect(f"/mall/orders/{exc.order['id']}")
            context["error"] = error_words(exc)
        else:
            async with pg.pool.acquire() as conn:
                await audit.record(conn, pg.actor, pg.session.user_id, "order_take", "order", str(order["id"]),
                                   merchant_id, None, {"good_id": order["good_id"], "quantity": order["quantity"],
                                                       "pay": order["pay"], "amount": order["amount"]})
            return redirect(f"/mall/orders/{order['id']}")
    values["request_id"] = new_request_id()
    return render(request, "mall/order_new.html", context, status_code=400, session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/mall/goods", goods_list, GET, "mall_goods"),
    ("/mall/goods/new", good_new, FORM, "mall_good_new"),
    ("/mall/goods/{good_id:int}", good_view, GET, "mall_good_view"),
    ("/mall/goods/{good_id:int}/edit", good_edit, FORM, "mall_good_edit"),
    ("/mall/goods/{good_id:int}/status", good_status, POST, "mall_good_status"),
    ("/mall/orders", orders_list, GET, "mall_orders"),
    ("/mall/orders/new", order_new, FORM, "mall_order_new"),
    ("/mall/orders/{order_id:int}", order_view, GET, "mall_order_view"),
    ("/mall/orders/{order_id:int}/edit", order_edit, FORM, "mall_order_edit"),
    ("/mall/orders/{order_id:int}/action", order_action, POST, "mall_order_action"),
    ("/mall/orders/{order_id:int}/cancel", order_cancel, POST, "mall_order_cancel"),
    ("/mall/orders/{order_id:int}/refund", order_refund, POST, "mall_order_refund"),
]

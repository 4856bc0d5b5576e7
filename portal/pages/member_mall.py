"""The points mall, member side: browse goods by merchant and program, a good and its order form,
my orders, cancel a placed one.

Every order is the logged-in member's own: placed from one of the member's cards, listed and
shown only to that member (another member's order answers 404, as one that does not exist).
Value moves only through :class:`ledger.loyalty.mall.Mall`: the amount is held when the order
is placed, taken when the merchant confirms, released when it is cancelled.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import mall as ledger_mall
from ledger.loyalty.mall import MallError
from ledger.loyalty.member_accounts import member_balances
from ledger.loyalty.seat import new_request_id
from portal.i18n import gettext as _
from portal.member_web import MemberPage, member_page
from portal.pages.mall import error_words, order_status_name
from portal.web import FORM, GET, POST, redirect, render

ID_MAX = 2**63 - 1
PAGE_SIZE = 24


def _id(request: Request, name: str) -> int:
    value = str(request.path_params[name])
    if not (value.isascii() and value.isdigit() and len(value) <= 18 and 0 < int(value) <= ID_MAX):
        raise HTTPException(404)
    return int(value)


def _after(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


async def _cards(pg: MemberPage) -> list[dict[str, Any]]:
    """The member's cards that may pay (active), masked, one entry each."""
    seen: dict[int, dict[str, Any]] = {}
    for b in await member_balances(pg.pool, pg.member_id):
        if b["status"] == "active":
            seen.setdefault(int(b["card_id"]), {"id": int(b["card_id"]), "pan": b["pan"]})
    return list(seen.values())


@member_page("member_mall")
async def mall_home(request: Request, pg: MemberPage) -> Response:
    """The goods on offer now, by merchant or program, keyset pages."""
    q = request.query_params
    merchant = q.get("merchant", "")[:15] or None
    program = q.get("program", "")[:20] or None
    result = await ledger_mall.list_goods(pg.pool, merchant_id=merchant, program=program, available_only=True,
                                          after_id=_after(q.get("after", "")), limit=PAGE_SIZE)
    merchants = await pg.pool.fetch("SELECT merchant_id, name, program FROM loyalty.merchants "
                                    "WHERE status = 'active' ORDER BY merchant_id LIMIT 200")
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "member/mall.html", {
        "goods": result["goods"], "next_url": next_url, "merchant": merchant or "", "program": program or "",
        "merchants": merchants, "programs": sorted({m["program"] for m in merchants})}, session=pg.session)


@member_page("member_mall_good")
async def mall_good(request: Request, pg: MemberPage) -> Response:
    """GET: a good and its order form. POST: order it (the amount is held from the chosen card)."""
    good = await ledger_mall.get_good(pg.pool, _id(request, "good_id"))
    if good is None or not good["available"]:
        raise HTTPException(404)
    cards = await _cards(pg)
    address = await pg.pool.fetchval("SELECT delivery_address FROM loyalty.members WHERE id = $1", pg.member_id)
    pays = [p for p, price in (("points", good["price_points"]), ("money", good["price_minor"])) if price]
    values = {"quantity": "1", "pay": pays[0], "card_id": str(cards[0]["id"]) if cards else "",
              "delivery_address": address or "", "request_key": new_request_id()}
    context: dict[str, Any] = {"good": good, "cards": cards, "pays": pays, "values": values, "error": None}
    if request.method == "GET":
        return render(request, "member/mall_good.html", context, session=pg.session)
    values.update({k: pg.field(k, ledger_mall.ADDRESS_LENGTH_MAX) for k in values})
    quantity, card_id = values["quantity"], values["card_id"]
    if not (quantity.isascii() and quantity.isdigit() and len(quantity) <= 4 and card_id.isascii()
            and card_id.isdigit() and len(card_id) <= 18):
        context["error"] = _("Choose a card and a quantity.")
    else:
        try:
            order = await _mall(pg).place(pg.member_id, int(card_id), good["id"], int(quantity), values["pay"],
                                          values["request_key"][:64], "mall", values["delivery_address"])
        except MallError as exc:
            if exc.order is not None:  # recorded (rejected): the member sees it among the orders
                return redirect(f"/member/orders/{exc.order['id']}")
            context["error"] = error_words(exc)
        else:
            return redirect(f"/member/orders/{order['id']}")
    values["request_key"] = new_request_id()
    return render(request, "member/mall_good.html", context, status_code=400, session=pg.session)


def _mall(pg: MemberPage) -> ledger_mall.Mall:
    if pg.portal.mall is None:
        raise HTTPException(503, "seat-off")
    return pg.portal.mall


@member_page("member_orders")
async def my_orders(request: Request, pg: MemberPage) -> Response:
    """The member's orders, newest first."""
    result = await ledger_mall.list_orders(pg.pool, member_id=pg.member_id,
                                           after_id=_after(request.query_params.get("before", "")), limit=PAGE_SIZE)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(before=result["next_after_id"]))
    return render(request, "member/orders.html", {"orders": result["orders"], "next_url": next_url,
                                                  "status_name": order_status_name}, session=pg.session)


async def _own_order(pg: MemberPage, order_id: int) -> dict[str, Any]:
    order = await ledger_mall.get_order(pg.pool, order_id, member_id=pg.member_id)
    if order is None:
        raise HTTPException(404)
    return order


@member_page("member_order")
async def my_order(request: Request, pg: MemberPage) -> Response:
    """One of the member's orders."""
    order = await _own_order(pg, _id(request, "order_id"))
    return render(request, "member/order.html", {"order": order, "status_name": order_status_name, "error": None},
                  session=pg.session)


@member_page("member_order_cancel")
async def my_order_cancel(request: Request, pg: MemberPage) -> Response:
    """POST: cancel the member's placed order (the held amount is released)."""
    order = await _own_order(pg, _id(request, "order_id"))
    try:
        await _mall(pg).cancel(order["id"], by_member_id=pg.member_id)
    except MallError as exc:
        return render(request, "member/order.html", {"order": await _own_order(pg, order["id"]),
                                                     "status_name": order_status_name, "error": error_words(exc)},
                      status_code=409, session=pg.session)
    return redirect(f"/member/orders/{order['id']}")


# (path, endpoint, methods, route name): portal/app.py mounts them; every one is a member route.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/member/mall", mall_home, GET, "member_mall"),
    ("/member/mall/goods/{good_id}", mall_good, FORM, "member_mall_good"),
    ("/member/orders", my_orders, GET, "member_orders"),
    ("/member/orders/{order_id}", my_order, GET, "member_order"),
    ("/member/orders/{order_id}/cancel", my_order_cancel, POST, "member_order_cancel"),
]

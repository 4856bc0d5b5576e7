"""The points mall for apps: goods (public) and the member's orders.

Placing and cancelling an order move value (a ledger hold, its release): they
need an Idempotency-Key, and the key also becomes the order's request key in the
mall (``request_key_of``), so a retry after a lost answer finds the same order
instead of placing another.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.responses import Response

from ledger.loyalty import mall as mall_domain
from ledger.loyalty.mall import Mall, MallError
from ledger.loyalty.outcomes import Channel
from ledger.loyalty.programs import KNOWN_CURRENCIES
from portal.api.body import Field, Int, Text, check
from portal.api.catalog import merchant_filter, program_filter
from portal.api.community import path_id
from portal.api.endpoint import Call, endpoint, json_response
from portal.api.problems import Problem, not_found
from portal.images import MEDIA_PREFIX

# MallError.code -> (status, problem type). "system": nothing known to be done; not kept for replay (5xx).
_ERRORS = {
    "not_found": (404, "not-found"),
    "not_available": (422, "refused"),
    "out_of_stock": (422, "out-of-stock"),
    "insufficient": (422, "insufficient-balance"),
    "invalid_state": (409, "conflict"),
    "invalid": (422, "refused"),
    "card_blocked": (422, "refused"),
    "system": (503, "unavailable"),
}


def currency_alpha(numeric: str | None) -> str | None:
    """ISO 4217 alphabetic code of a numeric one (``156`` -> ``CNY``); unknown ones as they are.

    >>> currency_alpha("156"), currency_alpha(None)
    ('CNY', None)
    """
    if numeric is None:
        return None
    return KNOWN_CURRENCIES[numeric][0] if numeric in KNOWN_CURRENCIES else numeric


def request_key_of(idempotency_key: str) -> str:
    """The mall's request key for an API Idempotency-Key (the mall accepts a narrower alphabet).

    >>> request_key_of("abc") == request_key_of("abc") != request_key_of("abd")
    True
    """
    return "api-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def _problem(exc: MallError) -> Problem:
    status, kind = _ERRORS.get(exc.code, (422, "refused"))
    extra = {"code": exc.code} | ({"order_id": exc.order["id"]} if exc.order is not None else {})
    return Problem(status, kind, str(exc), extra=extra)


def _mall(call: Call) -> Mall:
    mall = call.api.portal.mall
    if mall is None:
        raise Problem(503, "unavailable", "Orders cannot be taken now: the portal runs without the ledger.")
    return mall


def good_view(g: dict[str, Any]) -> dict[str, Any]:
    """A good as the API shows it: prices with their program and currency."""
    return {
        "id": g["id"], "merchant_id": g["merchant_id"], "merchant_name": g["merchant_name"], "program": g["program"],
        "name": g["name"], "description": g["description"],
        "image_url": f"{MEDIA_PREFIX}{g['image_id']}" if g["image_id"] is not None else None,
        "price_points": ({"points": g["price_points"], "program": g["program"]}
                         if g["price_points"] is not None else None),
        "price_money": ({"amount_minor": g["price_minor"], "currency": currency_alpha(g["currency"])}
                        if g["price_minor"] is not None else None),
        "stock": g["stock"],
        "valid_from": g["valid_from"].isoformat() if g["valid_from"] else None,
        "valid_until": g["valid_until"].isoformat() if g["valid_until"] else None,
    }


def order_view(o: dict[str, Any]) -> dict[str, Any]:
    """An order as the API shows it: the amount with its program (points) or currency (money)."""
    points = o["pay"] == "points"
    return {
        "id": o["id"], "status": o["status"], "good_id": o["good_id"], "good_name": o["good_name"],
        "merchant_id": o["merchant_id"], "merchant_name": o["merchant_name"], "card_id": o["card_id"],
        "quantity": o["quantity"], "pay": o["pay"],
        "amount": ({"points": o["amount"], "program": o["program"]} if points
                   else {"amount_minor": o["amount"], "currency": currency_alpha(o["currency"])}),
        "refunded": ({"points": o["refunded_amount"], "program": o["program"]} if points
                     else {"amount_minor": o["refunded_amount"], "currency": currency_alpha(o["currency"])}),
        "delivery_address": o["delivery_address"], "channel": o["channel"],
        "hold_expires_at": o["hold_expires_at"].isoformat() if o["hold_expires_at"] and o["status"] == "placed"
        else None,
        "created_at": o["created_at"].isoformat(), "updated_at": o["updated_at"].isoformat(),
    }


@endpoint(auth=False)
async def list_goods(call: Call) -> Response:
    """GET /goods: what may be ordered now, by id; ``?merchant=``, ``?program=``."""
    merchant, program = merchant_filter(call), program_filter(call)
    scope = f"goods:{merchant or ''}:{program or ''}"
    limit = call.limit()
    after = call.after(scope)
    found = await mall_domain.list_goods(call.pool, merchant, program, True,
                                         after if isinstance(after, int) else None, limit)
    items = [good_view(g) for g in found["goods"]]
    return json_response({"items": items, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_after_id"] is not None)})


@endpoint(auth=False)
async def get_good(call: Call) -> Response:
    """GET /goods/{id}: one good on offer (one not offered now is 404)."""
    found = await mall_domain.get_good(call.pool, path_id(call))
    if found is None or not found["available"]:
        raise not_found("No such good.")
    return json_response(good_view(found))


_ORDER: dict[str, Field] = {"good_id": Int(1, 2**63 - 1, required=True), "quantity": Int(1, mall_domain.QUANTITY_MAX),
          "pay": Text(6, required=True), "card_id": Int(1, 2**63 - 1),
          "delivery_address": Text(mall_domain.ADDRESS_LENGTH_MAX)}


async def _defaults(call: Call) -> tuple[int | None, str]:
    """The member's first active card (else its first card) and its profile's delivery address."""
    row = await call.pool.fetchrow(
        "SELECT m.delivery_address, (SELECT c.id FROM loyalty.cards c WHERE c.member_id = m.id "
        "ORDER BY (c.status = 'active') DESC, c.id LIMIT 1) AS card_id FROM loyalty.members m WHERE m.id = $1",
        call.member_id)
    if row is None:
        return None, ""
    return row["card_id"], str(row["delivery_address"])


@endpoint(body=True, moves_value=True)
async def place_order(call: Call) -> Response:
    """POST /orders: order a good, paid with points or stored value from one of the member's cards
    (default: its first active card); the amount is held until the merchant confirms. 201."""
    fields = check(call.body, _ORDER)
    if fields["pay"] not in mall_domain.PAY:
        raise Problem(400, "invalid-body", "pay must be points or money.")
    mall = _mall(call)
    card_id, address = fields.get("card_id"), fields.get("delivery_address")
    if card_id is None or address is None:
        default_card, default_address = await _defaults(call)
        card_id = card_id or default_card
        address = default_address if address is None else address
    if card_id is None:
        raise Problem(422, "refused", "The member holds no card.")
    assert call.idempotency_key is not None
    try:
        order = await mall.place(call.member_id, card_id, fields["good_id"], fields.get("quantity", 1), fields["pay"],
                                 request_key_of(call.idempotency_key), Channel.API, address)
    except MallError as exc:
        raise _problem(exc) from None
    return json_response(order_view(order), 201)


@endpoint()
async def list_orders(call: Call) -> Response:
    """GET /orders: the member's orders, newest first; ``?status=``."""
    status = call.request.query_params.get("status") or None
    if status is not None and status not in mall_domain.STATUSES:
        raise Problem(400, "bad-request", f"status must be one of {', '.join(mall_domain.STATUSES)}.")
    scope = f"orders:{call.member_id}:{status or ''}"
    limit = call.limit()
    after = call.after(scope)
    found = await mall_domain.list_orders(call.pool, member_id=call.member_id, status=status,
                                          after_id=after if isinstance(after, int) else None, limit=limit)
    items = [order_view(o) for o in found["orders"]]
    return json_response({"items": items, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_after_id"] is not None)})


@endpoint()
async def get_order(call: Call) -> Response:
    """GET /orders/{id}: one of the member's orders (another member's is 404)."""
    found = await mall_domain.get_order(call.pool, path_id(call), member_id=call.member_id)
    if found is None:
        raise not_found("No such order.")
    return json_response(order_view(found))


@endpoint(moves_value=True)
async def cancel_order(call: Call) -> Response:
    """POST /orders/{id}/cancel: cancel a placed order (its hold released, its stock given back).
    200 with the order; a cancelled one again answers the same; 409 once confirmed."""
    mall = _mall(call)
    order_id = path_id(call)
    if await mall_domain.get_order(call.pool, order_id, member_id=call.member_id) is None:
        raise not_found("No such order.")
    try:
        order = await mall.cancel(order_id, by_member_id=call.member_id, reason="cancelled by the member (app)")
    except MallError as exc:
        raise _problem(exc) from None
    return json_response(order_view(order))


ROUTES = [
    ("/goods", list_goods, ["GET"], "api_goods"),
    ("/goods/{id}", get_good, ["GET"], "api_good"),
    ("/orders", place_order, ["POST"], "api_orders_new"),
    ("/orders", list_orders, ["GET"], "api_orders"),
    ("/orders/{id}", get_order, ["GET"], "api_order"),
    ("/orders/{id}/cancel", cancel_order, ["POST"], "api_order_cancel"),
]

"""A member exchanges points of one program into another's, at the rate in force.

The page shows the rates in force and the member's points per program and card; the form
converts through :func:`ledger.loyalty.exchange.convert_points` (channel ``web``), once per
form (its request key), from one of the member's own active cards: another member's card
answers 404, as one that does not exist.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import rates
from ledger.loyalty.exchange import ExchangeError, convert_points
from ledger.loyalty.member_accounts import member_balances
from ledger.loyalty.outcomes import Channel
from ledger.loyalty.seat import new_request_id
from portal.i18n import gettext as _
from portal.member_web import MemberPage, member_page
from portal.pages.seat import reason_words
from portal.web import FORM, render


def _whole(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


@member_page("member_exchange")
async def exchange_page(request: Request, pg: MemberPage) -> Response:
    """GET: the rates in force and the exchange form. POST: exchange (once per form)."""
    balances = await member_balances(pg.pool, pg.member_id)
    cards = {int(b["card_id"]): b["pan"] for b in balances if b["status"] == "active"}
    values = {"card_id": str(next(iter(cards), "")), "from_program": "", "to_program": "", "points": "",
              "request_key": new_request_id()}
    context: dict[str, Any] = {"current": await rates.current(pg.pool), "balances": balances,
                               "cards": cards, "values": values, "error": None, "done": None}
    if request.method == "GET":
        return render(request, "member/exchange.html", context, session=pg.session)
    values.update({k: pg.field(k, 64) for k in values})
    card_id, points = _whole(values["card_id"]), _whole(values["points"])
    if card_id is None or card_id not in cards:
        raise HTTPException(404)  # another member's card (or a blocked one), as one that does not exist
    status = 200
    if points is None or points <= 0:
        context["error"], status = _("Write the points as a whole number."), 400
    else:
        portal = pg.portal
        if portal.loyalty is None:
            raise HTTPException(503, "seat-off")
        try:
            context["done"] = await convert_points(
                portal.loyalty.ledger, pg.pool, card_id, values["from_program"], values["to_program"], points,
                values["request_key"], Channel.WEB, pg.actor, portal.settings.exchange)
            context["balances"] = await member_balances(pg.pool, pg.member_id)
        except ExchangeError as exc:
            context["error"], status = reason_words(str(exc.reason)), 400
    values["request_key"] = new_request_id()
    return render(request, "member/exchange.html", context, status_code=status, session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them; every one is a member route.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/member/exchange", exchange_page, FORM, "member_exchange"),
]

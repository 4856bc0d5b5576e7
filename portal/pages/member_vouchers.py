"""A member redeems a points top-up card: serial and code typed in, the points credited once.

The card credited is one of the member's own (chosen from its active cards; another member's
card id is refused like a wrong one). Failed attempts count against the member and the client's
address (``[vouchers]``); the code typed is never shown back.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import member_profile, vouchers
from ledger.loyalty.outcomes import Channel
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.member_web import MemberPage, member_page
from portal.vouchers import Unavailable, redeem_for_member
from portal.web import FORM, render

# Every answer in words (the member's language).
REFUSAL_WORDS = {
    vouchers.Refusal.LOCKED: N_("Too many failed attempts. Try again later."),
    vouchers.Refusal.INVALID: N_("No top-up card has this serial and code."),
    vouchers.Refusal.USED: N_("This top-up card has already been redeemed."),
    vouchers.Refusal.EXPIRED: N_("This top-up card has expired."),
    vouchers.Refusal.SUSPENDED: N_("This top-up card cannot be redeemed."),
    vouchers.Refusal.NOT_SOLD: N_("This top-up card cannot be redeemed."),
    vouchers.Refusal.NO_CARD: N_("Choose one of your active cards."),
    vouchers.Refusal.AMOUNT: N_("This top-up card cannot be redeemed."),
    vouchers.Refusal.ERROR: N_("The top-up card could not be redeemed now. Try again later."),
}


def _card_id(text: str) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 18 else None


@member_page("member_voucher")
async def voucher_page(request: Request, pg: MemberPage) -> Response:
    """GET: the form. POST: redeem the top-up card for the chosen card."""
    cards = [c for c in await member_profile.member_cards(pg.pool, pg.member_id) if c["status"] == "active"]
    context: dict[str, Any] = {"cards": cards, "error": None, "done": None, "serial": ""}
    if request.method == "GET":
        return render(request, "member/voucher.html", context, session=pg.session)
    serial = pg.field("serial", vouchers.SERIAL_DIGITS + 8)
    code = pg.field("code", vouchers.CODE_DIGITS + 8)
    address = request.client.host if request.client else "unknown"
    try:
        done = await redeem_for_member(pg.portal, pg.member_id, _card_id(pg.field("card_id", 20)), serial, code,
                                       address, Channel.WEB)
    except Unavailable:
        context["error"] = _(REFUSAL_WORDS[vouchers.Refusal.ERROR])
        return render(request, "member/voucher.html", context, status_code=503, session=pg.session)
    if done.refusal is not None:
        context.update(error=_(REFUSAL_WORDS[done.refusal]), serial=serial)
        status = 429 if done.refusal is vouchers.Refusal.LOCKED else 400
        return render(request, "member/voucher.html", context, status_code=status, session=pg.session)
    context["done"] = done
    return render(request, "member/voucher.html", context, session=pg.session)


# (path, endpoint, methods, route name): portal/app.py mounts them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/member/voucher", voucher_page, FORM, "member_voucher"),
]

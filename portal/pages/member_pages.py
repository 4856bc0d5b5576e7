"""A member's own pages: profile, balances, transaction history, points rates, cards.

Every page reads the logged-in member's id from its session and passes it to the
ledger's member functions (ledger.loyalty.member_profile, member_accounts), so it
can show nothing of anyone else's: a card id of another member answers 404, the
same as one that does not exist. Card numbers are shown masked only; cards are
named by their row id in URLs.

A member may block one of its own cards (a lost card) but not unblock it: that is
the issuer's, so that whoever learned the password cannot undo the owner's block.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger import search
from ledger.loyalty import member_profile, pins
from ledger.loyalty.member_accounts import member_balances, program_rates
from ledger.loyalty.outcomes import Channel, TxnType
from ledger.loyalty.programs import ProvisioningError
from portal import audit, member_auth
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.member_web import MemberPage, member_page
from portal.pages.members import refusal, status_name
from portal.pages.seat import kind_name, reason_words
from portal.web import FORM, GET, POST, redirect, render

HISTORY_PAGE_SIZE_MAX = 100
# Not shown to members (as in the member API): they move nothing.
HISTORY_TYPES_HIDDEN = (str(TxnType.INQUIRY), str(TxnType.MARKER))
CHANNEL_NAMES = {Channel.TERMINAL: N_("Terminal"), Channel.WEB: N_("Web seat"), Channel.MALL: N_("Points mall"),
                 Channel.API: N_("App"), Channel.CLI: N_("Operator (command line)")}
def channel_name(channel: str | None) -> str:
    """A channel (where a transaction was taken) in the request's language."""
    try:
        return _(CHANNEL_NAMES[Channel(channel or "terminal")])
    except ValueError:
        return channel or ""


def _id(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 18 else None


async def _own_card(pg: MemberPage, card_id_text: str) -> dict[str, Any]:
    """The member's card of the URL, or 404 (no such card, or another member's)."""
    card_id = _id(card_id_text)
    card = None if card_id is None else await member_profile.member_card(pg.pool, pg.member_id, card_id)
    if card is None:
        raise HTTPException(404)
    return card


@member_page("member_profile")
async def profile_page(request: Request, pg: MemberPage) -> Response:
    """The member's profile: name, login phone, e-mail, delivery address."""
    found = await member_profile.profile(pg.pool, pg.member_id)
    if found is None:
        raise HTTPException(404)
    return render(request, "member/profile.html", {
        "profile": found, "saved": request.query_params.get("saved") == "1"}, session=pg.session)


@member_page("member_profile_edit")
async def profile_edit(request: Request, pg: MemberPage) -> Response:
    """GET: the form. POST: change the profile (a phone another member logs in with is refused)."""
    before = await member_profile.profile(pg.pool, pg.member_id)
    if before is None:
        raise HTTPException(404)
    values = {"name": before["name"], "phone": before["phone"] or "", "email": before["email"],
              "delivery_address": before["delivery_address"]}
    if request.method == "GET":
        return render(request, "member/profile_edit.html", {"values": values, "error": None}, session=pg.session)
    values = {"name": pg.field("name", 80), "phone": pg.field("phone", 30), "email": pg.field("email", 120),
              "delivery_address": pg.field("delivery_address", member_profile.ADDRESS_CHARS_MAX)}
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            after = await member_profile.update_profile(conn, pg.member_id, values["name"], values["phone"],
                                                        values["email"], values["delivery_address"])
            await audit.record(conn, pg.actor, None, "member_profile_edit", "member", str(pg.member_id), None,
                               _audited(before), _audited(after))
    except ProvisioningError as exc:
        return render(request, "member/profile_edit.html", {"values": values, "error": refusal(exc)},
                      status_code=400, session=pg.session)
    return redirect("/member/profile?saved=1")


def _audited(found: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a profile."""
    return {k: found[k] for k in ("name", "phone", "email", "delivery_address")}


@member_page("member_balances")
async def balances_page(request: Request, pg: MemberPage) -> Response:
    """Every card's balances: points per program, stored value, what is held (orders waiting)."""
    return render(request, "member/balances.html", {
        "balances": await member_balances(pg.pool, pg.member_id), "status_name": status_name}, session=pg.session)


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _cursor(text: str) -> tuple[dt.date, int] | None:
    """The history's page cursor ``YYYY-MM-DD.ID`` (the last row of the previous page), or None.

    >>> _cursor("2026-12-07.42"), _cursor("junk"), _cursor("")
    ((datetime.date(2026, 12, 7), 42), None, None)
    """
    day, _, row = text[:40].partition(".")
    parsed, row_id = _date(day), _id(row)
    return None if parsed is None or row_id is None else (parsed, row_id)


@member_page("member_history")
async def history_page(request: Request, pg: MemberPage) -> Response:
    """Transactions on the member's cards over every channel, newest first: filter by card, channel
    and business date; keyset pages (``before``: ledger.search.member_history's cursor)."""
    q = request.query_params
    cards = await member_profile.member_cards(pg.pool, pg.member_id)
    criteria = {"card": q.get("card", "")[:20], "channel": q.get("channel", "")[:20],
                "date_from": q.get("date_from", "")[:10], "date_to": q.get("date_to", "")[:10]}
    card_id = _id(criteria["card"])
    if criteria["card"] and (card_id is None or card_id not in {c["id"] for c in cards}):
        raise HTTPException(404)  # another member's card, as one that does not exist
    channel = criteria["channel"] if criteria["channel"] in {str(c) for c in Channel} else None
    date_from, date_to = _date(criteria["date_from"]), _date(criteria["date_to"])
    error = None
    if (criteria["date_from"] and date_from is None) or (criteria["date_to"] and date_to is None):
        error = _("Dates must be written YYYY-MM-DD.")
    filters = search.Filters(card_id=card_id, channel=channel, date_from=date_from, date_to=date_to)
    limit = min(pg.portal.settings.page_size_default, HISTORY_PAGE_SIZE_MAX)
    found = await search.member_history(pg.pool, pg.member_id, filters, _cursor(q.get("before", "")), limit,
                                        HISTORY_TYPES_HIDDEN)
    rows = found["transactions"]
    for t in rows:
        t["kind_label"], t["words"], t["channel_label"] = (kind_name(t["txn_type"]), reason_words(t["reason"]),
                                                           channel_name(t["channel"]))
    next_url = None
    if found["next_before"] is not None:
        day, row = found["next_before"]
        next_url = str(request.url.include_query_params(before=f"{day.isoformat()}.{row}"))
    return render(request, "member/history.html", {
        "rows": rows, "cards": cards, "criteria": criteria, "error": error, "next_url": next_url,
        "channels": [(str(c), channel_name(c)) for c in Channel]}, status_code=400 if error else 200,
        session=pg.session)


@member_page("member_rates")
async def rates_page(request: Request, pg: MemberPage) -> Response:
    """What a point is worth: each active program's issue price and redemption value per point."""
    return render(request, "member/rates.html", {"rates": await program_rates(pg.pool)}, session=pg.session)


@member_page("member_cards")
async def cards_page(request: Request, pg: MemberPage) -> Response:
    """The member's cards and their status; a card may be blocked from here when lost."""
    return render(request, "member/cards.html", {
        "cards": await member_profile.member_cards(pg.pool, pg.member_id), "status_name": status_name,
        "blocked": request.query_params.get("blocked") == "1"}, session=pg.session)


@member_page("member_card_block")
async def card_block(request: Request, pg: MemberPage) -> Response:
    """POST: block one of the member's own cards (lost or stolen). Unblocking is the issuer's."""
    card = await _own_card(pg, request.path_params["card_id"])
    if pg.field("confirm", 10) != "yes":
        raise HTTPException(400)
    async with pg.pool.acquire() as conn, conn.transaction():
        if await member_profile.block_own_card(conn, pg.member_id, card["id"]):
            await audit.record(conn, pg.actor, None, "card_blocked", "card", str(card["id"]), None,
                               {"status": card["status"]}, {"status": "blocked", "by": "member"})
    return redirect("/member/cards?blocked=1")


@member_page("member_card_pin")
async def card_pin(request: Request, pg: MemberPage) -> Response:
    """GET: the form. POST: set or change one of the member's own cards' PIN, with the member's
    password (a session alone is not enough to choose the PIN that spends the card's value)."""
    card = await _own_card(pg, request.path_params["card_id"])
    if request.method == "GET":
        return render(request, "member/card_pin.html", {"card": card, "message": None}, session=pg.session)
    password = pg.field("password", member_auth.PASSWORD_CHARS_MAX)
    pin, again = pg.field("pin", pins.PIN_DIGITS_MAX + 1), pg.field("again", pins.PIN_DIGITS_MAX + 1)
    message = None
    if not await member_auth.check_password(pg.pool, pg.member_id, password):
        message = _("The password is wrong.")
    elif pin != again:
        message = _("The two PINs differ.")
    else:
        master = pg.portal.master_key
        try:
            async with pg.pool.acquire() as conn, conn.transaction():
                await pins.set_pin(conn, () if master is None else (master,), card["id"], pin, "member")
                await audit.record(conn, pg.actor, None, "card_pin_set", "card", str(card["id"]), None, None,
                                   {"by": "member"})
        except pins.PinError:
            message = _("A PIN is 4 to 12 digits.") if not pins_ok(pin) else _("The PIN cannot be set now.")
        else:
            return redirect("/member/cards?pin=1")
    return render(request, "member/card_pin.html", {"card": card, "message": message}, status_code=400,
                  session=pg.session)


def pins_ok(pin: str) -> bool:
    """True for a PIN of 4 to 12 digits."""
    try:
        pins.check_pin(pin)
    except pins.PinError:
        return False
    return True


# (path, endpoint, methods, route name): portal/app.py mounts them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/member/profile", profile_page, GET, "member_profile"),
    ("/member/profile/edit", profile_edit, FORM, "member_profile_edit"),
    ("/member/balances", balances_page, GET, "member_balances"),
    ("/member/history", history_page, GET, "member_history"),
    ("/member/rates", rates_page, GET, "member_rates"),
    ("/member/cards", cards_page, GET, "member_cards"),
    ("/member/cards/{card_id}/block", card_block, POST, "member_card_block"),
    ("/member/cards/{card_id}/pin", card_pin, FORM, "member_card_pin"),
]

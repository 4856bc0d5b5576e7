"""Members (cards): issue, search and list, view with balances, edit, block and unblock.

A merchant's users see their program's members (ledger.loyalty.members says what
that means): a card outside it answers 404 like one that does not exist. A card
a merchant's user issues is enrolled in its program. The platform's users see
every card. A card is named by its row id in URLs; its number is typed into a
POST body only (issue, find) and shown masked everywhere.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import members as ledger_members
from ledger.loyalty.bins import list_bins
from ledger.loyalty.cards import CARD_STATUSES
from ledger.loyalty.merchants import show_merchant
from ledger.loyalty.programs import KNOWN_CURRENCIES, ProvisioningError, list_programs
from portal import audit
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.pages.seat import kind_name, reason_words
from portal.web import FORM, GET, POST, Page, page, redirect, render

RECENT_MAX = 20
STATUS_NAMES = {"active": N_("Active"), "blocked": N_("Blocked"), "expired": N_("Expired")}


def status_name(status: str) -> str:
    """A card's status in the request's language."""
    return _(STATUS_NAMES[status]) if status in STATUS_NAMES else status


async def own_program(pg: Page) -> str | None:
    """The program whose members a merchant's user sees; None for the platform's users."""
    merchant_id = pg.own_merchant()
    if merchant_id is None:
        return None
    merchant = await show_merchant(pg.pool, merchant_id)
    if merchant is None:
        raise HTTPException(404)
    return str(merchant["program"])


async def _visible_card(pg: Page, card_id_text: str) -> dict[str, Any]:
    """The card of the URL, or 404 (no such card, or not a member of the user's program)."""
    if not (card_id_text.isascii() and card_id_text.isdigit()) or len(card_id_text) > 18:
        raise HTTPException(404)
    card_id = int(card_id_text)
    program = await own_program(pg)
    if program is not None and not await ledger_members.is_member(pg.pool, card_id, program):
        raise HTTPException(404)
    card = await ledger_members.member(pg.pool, card_id)
    if card is None:
        raise HTTPException(404)
    return card


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() and len(value) <= 18 else None


@page("members")
async def member_list(request: Request, pg: Page) -> Response:
    """GET: search by name or phone and status, keyset pages. POST: find one card by its number."""
    program = await own_program(pg)
    q = request.query_params
    if program is None and q.get("program"):
        program = q.get("program", "")[:20]  # the platform's users may look at one program's members
    criteria = {"q": q.get("q", "")[:80].strip(), "status": q.get("status") if q.get("status") in CARD_STATUSES
                else ""}
    error = None
    status_code = 200
    if request.method == "POST":
        pan = pg.field("pan", 40).replace(" ", "")
        card_id = await ledger_members.card_id_of(pg.pool, pan) if pan.isdigit() else None
        if card_id is not None and (program is None or await ledger_members.is_member(pg.pool, card_id, program)):
            return redirect(f"/members/{card_id}")
        error, status_code = _("No member has that card number."), 404
    result = await ledger_members.search_members(
        pg.pool, program=program, text=criteria["q"] or None, status=criteria["status"] or None,
        after_id=_int(q.get("after")), limit=pg.portal.settings.page_size_default)
    next_url = None
    if result["next_after_id"] is not None:
        next_url = str(request.url.include_query_params(after=result["next_after_id"]))
    return render(request, "members/list.html", {
        "criteria": criteria, "members": result["members"], "next_url": next_url, "program": program,
        "statuses": [(s, status_name(s)) for s in CARD_STATUSES], "status_name": status_name, "error": error},
        status_code=status_code, session=pg.session)


@page("member_new")
async def member_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: issue a card (a number typed, or drawn under a platform BIN) and enrol it."""
    program = await own_program(pg)
    bins = await list_bins(pg.pool)
    programs = [] if program is not None else await list_programs(pg.pool)
    values = {"bin": bins[0]["prefix"] if bins else "", "name": "", "phone": "", "expiry": "", "program": ""}
    context: dict[str, Any] = {"bins": bins, "programs": programs, "program": program, "values": values,
                               "error": None}
    if request.method == "GET":
        return render(request, "members/new.html", context, session=pg.session)
    values.update({k: pg.field(k, 80) for k in values})
    pan = pg.field("pan", 40).replace(" ", "") or None
    enrol_in = program if program is not None else (values["program"] or None)
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            card = await ledger_members.issue_member(conn, pan, values["bin"] or None, enrol_in,
                                                     values["expiry"] or None, values["name"] or None,
                                                     values["phone"] or None)
            await audit.record(conn, pg.actor, pg.session.user_id, "card_issue", "card", str(card["id"]),
                               pg.own_merchant(), None, _audited(card) | {"program": enrol_in})
    except ProvisioningError as exc:
        context["error"] = str(exc)
        return render(request, "members/new.html", context, status_code=400, session=pg.session)
    return redirect(f"/members/{card['id']}")


def _audited(card: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a card: never its full number."""
    return {k: card[k] for k in ("pan", "status", "expiry", "name", "phone") if k in card}


@page("member_view")
async def member_view(request: Request, pg: Page) -> Response:
    """A card: holder, status, balances per program and stored value, recent transactions."""
    card = await _visible_card(pg, request.path_params["card_id"])
    recent = await ledger_members.card_transactions(pg.pool, card["id"], pg.own_merchant(), RECENT_MAX)
    for t in recent:
        t["kind_label"], t["words"] = kind_name(t["txn_type"]), reason_words(t["reason"])
    return render(request, "members/view.html", {"card": card, "recent": recent, "status_name": status_name,
                                                 "currency_of": currency_of}, session=pg.session)


def currency_of(asset: str) -> str | None:
    """The ISO 4217 numeric code of a money asset (``CNY`` -> ``156``), for formatting.

    >>> currency_of("CNY"), currency_of("PTS:ALLY")
    ('156', None)
    """
    return next((code for code, (alpha, _scale) in KNOWN_CURRENCIES.items() if alpha == asset), None)


@page("member_edit")
async def member_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: change the holder's name, phone and the card's expiry."""
    card = await _visible_card(pg, request.path_params["card_id"])
    values = {"name": card["name"] or "", "phone": card["phone"] or "", "expiry": card["expiry"] or ""}
    if request.method == "GET":
        return render(request, "members/edit.html", {"card": card, "values": values, "error": None},
                      session=pg.session)
    values = {k: pg.field(k, 80) for k in values}
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            await ledger_members.update_member(conn, card["id"], values["name"] or None, values["phone"] or None,
                                               values["expiry"] or None)
            await audit.record(conn, pg.actor, pg.session.user_id, "card_edit", "card", str(card["id"]),
                               pg.own_merchant(), _audited(card), values)
    except ProvisioningError as exc:
        return render(request, "members/edit.html", {"card": card, "values": values, "error": str(exc)},
                      status_code=400, session=pg.session)
    return redirect(f"/members/{card['id']}")


@page("member_status")
async def member_status(request: Request, pg: Page) -> Response:
    """POST: block (``blocked``) or unblock (``active``) the card."""
    card = await _visible_card(pg, request.path_params["card_id"])
    status = pg.field("status", 10)
    if status not in ("active", "blocked"):
        raise HTTPException(400)
    async with pg.pool.acquire() as conn, conn.transaction():
        await ledger_members.set_member_status(conn, card["id"], status)
        await audit.record(conn, pg.actor, pg.session.user_id, f"card_{status}", "card", str(card["id"]),
                           pg.own_merchant(), {"status": card["status"]}, {"status": status})
    return redirect(f"/members/{card['id']}")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/members", member_list, FORM, "members"),
    ("/members/new", member_new, FORM, "member_new"),
    ("/members/{card_id}", member_view, GET, "member_view"),
    ("/members/{card_id}/edit", member_edit, FORM, "member_edit"),
    ("/members/{card_id}/status", member_status, POST, "member_status"),
]

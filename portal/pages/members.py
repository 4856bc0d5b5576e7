"""Members (cards): issue, search and list, view with balances, edit, block and unblock; the
member's online login: a first password, a reset, a one-time activation code.

A merchant's users see their program's members (ledger.loyalty.members says what
that means): a card outside it answers 404 like one that does not exist. A card
a merchant's user issues is enrolled in its program. The platform's users see
every card. A card is named by its row id in URLs; its number is typed into a
POST body only (issue, find) and shown masked everywhere.

A card belongs to a member (``loyalty.members``): the name, phone, e-mail and
delivery address shown and edited on a card's page are its member's, and an edit
there is the member's (ledger.loyalty.member_profile keeps the card's old name
and phone columns in step). A card is issued to a new member or, as a further
card, to an existing one the user can see (named by one of its card numbers or
its phone). Its holder's first online password is typed by the issuer (to be
changed at first login) or chosen by the member with an activation code shown
here once; the same page resets the password (the member's sessions end) or
makes a new code.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import member_profile, pins
from ledger.loyalty import members as ledger_members
from ledger.loyalty.bins import list_bins
from ledger.loyalty.cards import CARD_STATUSES
from ledger.loyalty.merchants import show_merchant
from ledger.loyalty.programs import KNOWN_CURRENCIES, ProvisioningError, list_programs
from portal import audit, member_auth
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


CREDENTIALS = ("activation", "password", "none")
MEMBER_NOT_VISIBLE = N_("No member of your program has that card number or phone.")
# The ledger's refusals that a member's holder may meet, in the catalogs' words.
REFUSALS = {
    member_profile.PHONE_TAKEN: N_("That phone number belongs to another member."),
    "that phone number belongs to another member: issue the card to them":
        N_("That phone number belongs to another member: issue the card to that member instead."),
    "phone must be 5..20 digits, with spaces, dashes or a leading +":
        N_("The phone number must be 5 to 20 digits, with spaces, dashes or a leading +."),
    "the e-mail address does not look like one": N_("The e-mail address does not look like one."),
}


def refusal(exc: Exception) -> str:
    """A ledger or login refusal in the request's language (the catalogs' words where they have them)."""
    message = str(exc)
    if message in REFUSALS:
        return _(REFUSALS[message])
    return _(message) if isinstance(exc, member_auth.MemberAuthError) else message


async def _holder_in_reach(pg: Page, program: str | None, login: str) -> int | None:
    """The existing member a card number or phone names, if this user may see it (a merchant's
    users: a member of their program), else None."""
    member_id = await member_profile.find_member_id(pg.pool, login)
    if member_id is None or (program is not None and not await ledger_members.member_in_program(
            pg.pool, member_id, program)):
        return None
    return member_id


async def _first_credential(conn: Any, pg: Page, member_id: int, credential: str, password: str) -> str | None:
    """Give the member a first password (must change) or an activation code (returned, to show
    once); nothing for ``none``. MemberAuthError when the policy refuses the password."""
    if credential == "password":
        await member_auth.set_password(conn, member_id, password, by_self=False)
    elif credential == "activation":
        return await member_auth.new_activation(conn, member_id, pg.actor, pg.portal.settings.secret)
    return None


@page("member_new")
async def member_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: issue a card (a number typed, or drawn under a platform BIN) to a new
    member or to an existing one, enrol it, and give its holder a first password or an activation
    code (shown once)."""
    program = await own_program(pg)
    bins = await list_bins(pg.pool)
    programs = [] if program is not None else await list_programs(pg.pool)
    values = {"bin": bins[0]["prefix"] if bins else "", "name": "", "phone": "", "email": "", "expiry": "",
              "program": "", "holder": "new", "holder_login": "", "credential": "activation"}
    context: dict[str, Any] = {"bins": bins, "programs": programs, "program": program, "values": values,
                               "error": None}
    if request.method == "GET":
        return render(request, "members/new.html", context, session=pg.session)
    values.update({k: pg.field(k, 120 if k == "email" else 80) for k in values})
    # Absent (a form without the choices): a new member, no login yet.
    values["holder"], values["credential"] = values["holder"] or "new", values["credential"] or "none"
    password = pg.field("first_password", member_auth.PASSWORD_CHARS_MAX)
    pan = pg.field("pan", 40).replace(" ", "") or None
    enrol_in = program if program is not None else (values["program"] or None)
    if values["holder"] not in ("new", "existing") or values["credential"] not in CREDENTIALS:
        raise HTTPException(400)
    member_id = None
    if values["holder"] == "existing":
        member_id = await _holder_in_reach(pg, program, values["holder_login"])
        if member_id is None:
            context["error"] = _(MEMBER_NOT_VISIBLE)
            return render(request, "members/new.html", context, status_code=400, session=pg.session)
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            if member_id is None:
                member_profile.check_email(values["email"])
            card = await ledger_members.issue_member(conn, pan, values["bin"] or None, enrol_in,
                                                     values["expiry"] or None, values["name"] or None,
                                                     values["phone"] or None, member_id=member_id)
            if member_id is None and values["email"]:
                await conn.execute("UPDATE loyalty.members SET email = $2 WHERE id = $1", card["member_id"],
                                   values["email"])
            code = await _first_credential(conn, pg, card["member_id"], values["credential"], password)
            await audit.record(conn, pg.actor, pg.session.user_id, "card_issue", "card", str(card["id"]),
                               pg.own_merchant(), None, _audited(card) | {
                                   "program": enrol_in, "member_id": card["member_id"],
                                   "to": values["holder"], "credential": values["credential"]})
    except (ProvisioningError, member_auth.MemberAuthError) as exc:
        context["error"] = refusal(exc)
        return render(request, "members/new.html", context, status_code=400, session=pg.session)
    if code is not None:
        return _code_once(request, pg, card, code)
    return redirect(f"/members/{card['id']}")


def _code_once(request: Request, pg: Page, card: dict[str, Any], code: str) -> Response:
    """The page that shows a new activation code, this once (never stored, never logged)."""
    response = render(request, "members/code_once.html", {"card": card, "code": code}, session=pg.session)
    response.headers["cache-control"] = "no-store"
    return response


def _audited(card: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a card: never its full number."""
    return {k: card[k] for k in ("pan", "status", "expiry", "name", "phone") if k in card}


@page("member_view")
async def member_view(request: Request, pg: Page) -> Response:
    """A card: its member (name, phone, e-mail, address, login state, other cards), status,
    balances per program and stored value, recent transactions."""
    card = await _visible_card(pg, request.path_params["card_id"])
    return render(request, "members/view.html", await _view_context(pg, card, None), session=pg.session)


async def _view_context(pg: Page, card: dict[str, Any], message: str | None) -> dict[str, Any]:
    recent = await ledger_members.card_transactions(pg.pool, card["id"], pg.own_merchant(), RECENT_MAX)
    for t in recent:
        t["kind_label"], t["words"] = kind_name(t["txn_type"]), reason_words(t["reason"])
    program = await own_program(pg)
    others = []
    for other in await member_profile.member_cards(pg.pool, card["member_id"]):
        if other["id"] != card["id"]:
            other["visible"] = program is None or await ledger_members.is_member(pg.pool, other["id"], program)
            others.append(other)
    return {"card": card, "holder": await member_profile.profile(pg.pool, card["member_id"]), "others": others,
            "recent": recent, "status_name": status_name, "currency_of": currency_of, "message": message}


def currency_of(asset: str) -> str | None:
    """The ISO 4217 numeric code of a money asset (``CNY`` -> ``156``), for formatting.

    >>> currency_of("CNY"), currency_of("PTS:ALLY")
    ('156', None)
    """
    return next((code for code, (alpha, _scale) in KNOWN_CURRENCIES.items() if alpha == asset), None)


@page("member_edit")
async def member_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: change the member's name, phone, e-mail and delivery address, and
    the card's expiry."""
    card = await _visible_card(pg, request.path_params["card_id"])
    holder = await member_profile.profile(pg.pool, card["member_id"])
    assert holder is not None  # a card always has its member (0016: NOT NULL)
    values = {"name": holder["name"], "phone": holder["phone"] or "", "email": holder["email"],
              "delivery_address": holder["delivery_address"], "expiry": card["expiry"] or ""}
    if request.method == "GET":
        return render(request, "members/edit.html", {"card": card, "values": values, "error": None},
                      session=pg.session)
    values = {k: pg.field(k, member_profile.ADDRESS_CHARS_MAX if k == "delivery_address" else 120) for k in values}
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            after = await member_profile.update_profile(conn, card["member_id"], values["name"], values["phone"],
                                                        values["email"], values["delivery_address"])
            await ledger_members.set_expiry(conn, card["id"], values["expiry"] or None)
            await audit.record(conn, pg.actor, pg.session.user_id, "member_edit", "member", str(card["member_id"]),
                               pg.own_merchant(), _profile_audited(holder) | {"expiry": card["expiry"]},
                               _profile_audited(after) | {"expiry": values["expiry"] or None, "card": card["pan"]})
    except ProvisioningError as exc:
        return render(request, "members/edit.html", {"card": card, "values": values, "error": refusal(exc)},
                      status_code=400, session=pg.session)
    return redirect(f"/members/{card['id']}")


def _profile_audited(found: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a member's profile."""
    return {k: found[k] for k in ("name", "phone", "email", "delivery_address")}


@page("member_reset")
async def member_reset(request: Request, pg: Page) -> Response:
    """POST: give the card's member a temporary password; it must change it at its next login, and
    every session it has ends."""
    card = await _visible_card(pg, request.path_params["card_id"])
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            await member_auth.set_password(conn, card["member_id"],
                                           pg.field("password", member_auth.PASSWORD_CHARS_MAX), by_self=False)
            await audit.record(conn, pg.actor, pg.session.user_id, "member_password_reset", "member",
                               str(card["member_id"]), pg.own_merchant(), None, {"card": card["pan"]})
    except member_auth.MemberAuthError as exc:
        return render(request, "members/view.html", await _view_context(pg, card, refusal(exc)), status_code=400,
                      session=pg.session)
    return redirect(f"/members/{card['id']}?reset=1")


@page("member_pin")
async def member_pin(request: Request, pg: Page) -> Response:
    """POST: set the card's PIN, typed twice by the member at the merchant's desk (only a keyed
    one-way value is kept; the count of wrong tries starts again)."""
    card = await _visible_card(pg, request.path_params["card_id"])
    pin, again = pg.field("pin", pins.PIN_DIGITS_MAX + 1), pg.field("again", pins.PIN_DIGITS_MAX + 1)
    try:
        if pin != again:
            raise pins.PinError("the two PINs differ")
        master = pg.portal.master_key
        async with pg.pool.acquire() as conn, conn.transaction():
            await pins.set_pin(conn, () if master is None else (master,), card["id"], pin,
                               f"portal:{pg.actor}"[:pins.SET_BY_LENGTH_MAX])
            await audit.record(conn, pg.actor, pg.session.user_id, "card_pin_set", "card", str(card["id"]),
                               pg.own_merchant(), None, {"card": card["pan"]})
    except pins.PinError as exc:
        return render(request, "members/view.html", await _view_context(pg, card, refusal(exc)), status_code=400,
                      session=pg.session)
    return redirect(f"/members/{card['id']}?pin=1")


@page("member_activation")
async def member_activation(request: Request, pg: Page) -> Response:
    """POST: a new one-time activation code for the card's member, shown this once (earlier unused
    codes stop working)."""
    card = await _visible_card(pg, request.path_params["card_id"])
    async with pg.pool.acquire() as conn, conn.transaction():
        code = await member_auth.new_activation(conn, card["member_id"], pg.actor, pg.portal.settings.secret)
        await audit.record(conn, pg.actor, pg.session.user_id, "member_activation", "member", str(card["member_id"]),
                           pg.own_merchant(), None, {"card": card["pan"]})
    return _code_once(request, pg, card, code)


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
    ("/members/{card_id}/password", member_reset, POST, "member_reset"),
    ("/members/{card_id}/activation", member_activation, POST, "member_activation"),
    ("/members/{card_id}/pin", member_pin, POST, "member_pin"),
]

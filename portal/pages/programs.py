"""Programs (alliance or hosted) and their lottery tables: list, view, add, set the lottery, set the
points expiry and the residual stored-value policy.

Through the functions ``switchd program add|update|list|show|lottery`` calls
(ledger.loyalty.programs), with an audit entry in the same transaction. The
platform operator reads; only the platform admin changes.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import lots
from ledger.loyalty import programs as ledger_programs
from ledger.loyalty.programs import KNOWN_CURRENCIES, ProvisioningError
from portal import audit
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import FORM, GET, Page, page, redirect, render

KINDS = ("alliance", "hosted")
PRIZE_LINES_MAX = ledger_programs.PRIZES_MAX


def whole(value: str, name: str) -> int:
    """A form's whole number; ProvisioningError naming the field otherwise.

    >>> whole("12", "x"), whole(" 0 ", "x")
    (12, 0)
    """
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ProvisioningError(f"{name} must be a whole number")
    return int(value)


async def _program_or_404(pg: Page, code: str) -> dict[str, Any]:
    found = await ledger_programs.show_program(pg.pool, code[:16])
    if found is None:
        raise HTTPException(404)
    return found


@page("programs")
async def program_list(request: Request, pg: Page) -> Response:
    """Every program (a platform has a handful; the ledger lists them all)."""
    return render(request, "platform/programs.html", {"programs": await ledger_programs.list_programs(pg.pool)},
                  session=pg.session)


@page("program_view")
async def program_view(request: Request, pg: Page) -> Response:
    """One program: terms, points outstanding, lottery prize table."""
    program = await _program_or_404(pg, request.path_params["code"])
    return render(request, "platform/program.html", {"p": program}, session=pg.session)


@page("program_new")
async def program_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: add the program (ledger.loyalty.programs.add_program)."""
    values = {"code": "", "name": "", "kind": "alliance", "issue_price_minor": "1", "redeem_value_minor": "1",
              "currency": ledger_programs.DEFAULT_CURRENCY, "pin_required_for_redeem": "",
              "pin_required_for_sv": "1", "txn_max_points": "10000000"}
    context: dict[str, Any] = {"values": values, "kinds": KINDS, "currencies": sorted(KNOWN_CURRENCIES),
                               "error": None}
    if request.method == "GET":
        return render(request, "platform/program_form.html", context, session=pg.session)
    values.update({k: pg.field(k, 80) for k in values})
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            created = await ledger_programs.add_program(
                conn, values["code"], values["name"], values["kind"],
                whole(values["issue_price_minor"], "issue price"),
                whole(values["redeem_value_minor"], "redemption value"), values["currency"],
                values["pin_required_for_redeem"] == "1", whole(values["txn_max_points"], "per-transaction maximum"),
                values["pin_required_for_sv"] == "1")
            await audit.record(conn, pg.actor, pg.session.user_id, "program_add", "program", created["code"], None,
                               None, created)
    except ProvisioningError as exc:
        context["error"] = str(exc)
        return render(request, "platform/program_form.html", context, status_code=400, session=pg.session)
    return redirect(f"/programs/{created['code']}")


def prizes_text(prizes: list[dict[str, Any]]) -> str:
    """A prize table as the form shows it, one ``CODE:POINTS:WEIGHT`` a line.

    >>> prizes_text([{"code": "A", "points": 5, "weight": 2}])
    'A:5:2'
    """
    return "\n".join(f"{p['code']}:{p['points']}:{p['weight']}" for p in prizes)


@page("program_lottery")
async def program_lottery(request: Request, pg: Page) -> Response:
    """GET: the form. POST: set the draw price and replace the prize table (set_lottery)."""
    program = await _program_or_404(pg, request.path_params["code"])
    values = {"price_points": str(program["lottery_price_points"] or ""),
              "prizes": prizes_text(program["lottery_prizes"])}
    context: dict[str, Any] = {"p": program, "values": values, "error": None}
    if request.method == "GET":
        return render(request, "platform/lottery_form.html", context, session=pg.session)
    values.update({"price_points": pg.field("price_points", 20), "prizes": pg.field("prizes", 2000)})
    try:
        lines = [line.strip() for line in values["prizes"].splitlines() if line.strip()]
        if len(lines) > PRIZE_LINES_MAX:
            raise ProvisioningError(_(N_("At most 32 prizes.")))
        prizes = [ledger_programs.parse_prize(line) for line in lines]
        async with pg.pool.acquire() as conn, conn.transaction():
            after = await ledger_programs.set_lottery(conn, program["code"], whole(values["price_points"],
                                                                                   "draw price"), prizes)
            await audit.record(conn, pg.actor, pg.session.user_id, "program_lottery", "program", program["code"],
                               None, _lottery_of(program), _lottery_of(after))
    except ProvisioningError as exc:
        context["error"] = str(exc)
        return render(request, "platform/lottery_form.html", context, status_code=400, session=pg.session)
    return redirect(f"/programs/{program['code']}")


def _lottery_of(program: dict[str, Any]) -> dict[str, Any]:
    return {"lottery_price_points": program["lottery_price_points"], "lottery_prizes": program["lottery_prizes"]}


EXPIRY_FIELDS = ("points_expiry_months", "residual_policy", "residual_grace_days")


@page("program_expiry")
async def program_expiry(request: Request, pg: Page) -> Response:
    """GET: the form. POST: set the points expiry (blank: never) and the residual-value policy."""
    program = await _program_or_404(pg, request.path_params["code"])
    values = {"points_expiry_months": str(program["points_expiry_months"] or ""),
              "residual_policy": program["residual_policy"],
              "residual_grace_days": str(program["residual_grace_days"])}
    context: dict[str, Any] = {"p": program, "values": values, "policies": lots.RESIDUAL_POLICIES, "error": None}
    if request.method == "GET":
        return render(request, "platform/expiry_form.html", context, session=pg.session)
    values.update({k: pg.field(k, 20) for k in EXPIRY_FIELDS})
    try:
        months_text = values["points_expiry_months"].strip()
        months = whole(months_text, "points expiry (months)") if months_text else None
        if values["residual_policy"] not in lots.RESIDUAL_POLICIES:
            raise ProvisioningError("residual policy must be liability or breakage")
        async with pg.pool.acquire() as conn, conn.transaction():
            if months != program["points_expiry_months"]:
                await lots.set_expiry(conn, program["code"], months)
            await lots.set_residual_policy(conn, program["code"], values["residual_policy"],
                                           whole(values["residual_grace_days"], "grace (days)"))
            after = await ledger_programs.show_program(conn, program["code"])
            assert after is not None
            await audit.record(conn, pg.actor, pg.session.user_id, "program_update", "program", program["code"],
                               None, {k: program[k] for k in EXPIRY_FIELDS}, {k: after[k] for k in EXPIRY_FIELDS})
    except ProvisioningError as exc:
        context["error"] = str(exc)
        return render(request, "platform/expiry_form.html", context, status_code=400, session=pg.session)
    return redirect(f"/programs/{program['code']}")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/programs", program_list, GET, "programs"),
    ("/programs/new", program_new, FORM, "program_new"),
    ("/programs/{code}", program_view, GET, "program_view"),
    ("/programs/{code}/lottery", program_lottery, FORM, "program_lottery"),
    ("/programs/{code}/expiry", program_expiry, FORM, "program_expiry"),
]

"""Exchange rates between programs: the table in force (everyone), its history and a new rate
(the platform).

Through ledger.loyalty.rates (``switchd rate``): a rate is never changed, a new one is a new
row with its effective time; the table shows, per pair, the one in force now. Setting one is
audited in the same transaction. Merchants' users see the table (their members ask them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import rates
from portal import audit
from portal.i18n import gettext as _
from portal.permissions import PLATFORM_ROLES
from portal.web import GET, POST, Page, page, redirect, render

HISTORY_ROWS = 100
AUDITED = ("from_program", "to_program", "rate_num", "rate_den", "fee_bps", "effective_from")
EMPTY = {"from_program": "", "to_program": "", "rate_num": "", "rate_den": "1", "fee_bps": "0", "effective_from": ""}


def _whole(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def parse_effective(text: str) -> dt.datetime | None:
    """The form's effective time: ``YYYY-MM-DDTHH:MM`` in UTC (a datetime-local field), or None.

    >>> parse_effective("2026-03-09T14:00"), parse_effective("junk")
    (datetime.datetime(2026, 3, 9, 14, 0, tzinfo=datetime.timezone.utc), None)
    """
    try:
        when = dt.datetime.fromisoformat(text[:25])
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@page("exchange_rates")
async def rate_table(request: Request, pg: Page) -> Response:
    """The rates in force now; for the platform also their history and the form of a new one."""
    return await _render(request, pg, None, dict(EMPTY), 200)


async def _render(request: Request, pg: Page, error: str | None, values: dict[str, str], status: int) -> Response:
    platform = pg.session.role in PLATFORM_ROLES
    history = await rates.history(pg.pool, limit=HISTORY_ROWS) if platform else []
    programs = await pg.pool.fetch("SELECT code, name FROM loyalty.programs ORDER BY code LIMIT 500")
    return render(request, "platform/exchange_rates.html", {
        "current": await rates.current(pg.pool), "history": history, "programs": programs, "error": error,
        "values": values}, status_code=status, session=pg.session)


@page("exchange_rate_new")
async def rate_new(request: Request, pg: Page) -> Response:
    """POST: publish a rate (effective now, or from the time given, in UTC)."""
    values = {k: pg.field(k, 40) for k in EMPTY}
    num, den, fee = _whole(values["rate_num"]), _whole(values["rate_den"]), _whole(values["fee_bps"] or "0")
    when = parse_effective(values["effective_from"]) if values["effective_from"] else None
    if num is None or den is None or fee is None:
        return await _render(request, pg, _("The rate and the fee are whole numbers."), values, 400)
    if values["effective_from"] and when is None:
        return await _render(request, pg, _("Write the effective time as YYYY-MM-DD HH:MM."), values, 400)
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            before = await rates.in_force(conn, values["from_program"], values["to_program"])
            new = await rates.set_rate(conn, values["from_program"], values["to_program"], num, den, fee, when,
                                       pg.actor[:rates.CREATED_BY_LENGTH_MAX])
            await audit.record(conn, pg.actor, pg.session.user_id, "rate_set", "exchange_rate",
                               f"{new.from_program}>{new.to_program}", None, _audited(before), _audited(new))
    except rates.RateError as exc:
        return await _render(request, pg, str(exc), values, 400)
    return redirect("/exchange-rates")


def _audited(rate: rates.Rate | None) -> dict[str, Any] | None:
    """What the audit log keeps of a rate."""
    return None if rate is None else {k: str(v) for k, v in rate.as_dict().items() if k in AUDITED}


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/exchange-rates", rate_table, GET, "exchange_rates"),
    ("/exchange-rates/new", rate_new, POST, "exchange_rate_new"),
]

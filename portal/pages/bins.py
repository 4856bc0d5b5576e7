"""BIN ranges: the card-number prefixes the platform issues under; list, add, remove.

Through ledger.loyalty.bins (``switchd bins``): a range ``LOW-HIGH`` is stored as the
fewest prefixes that cover it, and no prefix may overlap another. Each change is
audited in the same transaction.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ledger.loyalty import bins as ledger_bins
from portal import audit
from portal.web import GET, POST, Page, page, redirect, render


@page("bins")
async def bin_list(request: Request, pg: Page) -> Response:
    """Every BIN prefix (a platform has a few; the table is bounded by its use)."""
    return await _render(request, pg, None, {"range": "", "description": ""}, 200)


async def _render(request: Request, pg: Page, error: str | None, values: dict[str, str], status: int) -> Response:
    return render(request, "platform/bins.html", {"bins": await ledger_bins.list_bins(pg.pool), "error": error,
                                                  "values": values}, status_code=status, session=pg.session)


@page("bin_new")
async def bin_new(request: Request, pg: Page) -> Response:
    """POST: add a prefix or a range (the form is on the list)."""
    values = {"range": pg.field("range", 30), "description": pg.field("description", 100)}
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            added = await ledger_bins.add_bins(conn, values["range"], values["description"])
            await audit.record(conn, pg.actor, pg.session.user_id, "bin_add", "bin_range", values["range"], None,
                               None, {"prefixes": added, "description": values["description"]})
    except ledger_bins.BinError as exc:
        return await _render(request, pg, str(exc), values, 400)
    return redirect("/bins")


@page("bin_remove")
async def bin_remove(request: Request, pg: Page) -> Response:
    """POST: remove exactly the prefixes of a prefix or a range (cards already issued keep their numbers)."""
    text = pg.field("range", 30)
    try:
        async with pg.pool.acquire() as conn, conn.transaction():
            removed = await ledger_bins.remove_bins(conn, text)
            await audit.record(conn, pg.actor, pg.session.user_id, "bin_remove", "bin_range", text, None,
                               {"prefixes": removed}, None)
    except ledger_bins.BinError as exc:
        return await _render(request, pg, str(exc), {"range": "", "description": ""}, 400)
    return redirect("/bins")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/bins", bin_list, GET, "bins"),
    ("/bins/new", bin_new, POST, "bin_new"),
    ("/bins/remove", bin_remove, POST, "bin_remove"),
]

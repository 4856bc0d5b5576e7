"""Settlement: the cleared business days, each day's end-of-day figures per merchant, the
alliance's issuer x redeemer matrix, and the settlement files ``switchd eod run`` wrote.

A day's figures and matrix are shown a page at a time (keyset); the whole matrix, which
has up to one row per pair of merchants, is a CSV streamed a page at a time.

Figures come from ledger.clearing (what end of day stored); files from the settlement
directory (PortalSettings.settlement_dir), found by (day, merchant id) through the day's
summary and checked against the SHA-256 it recorded: never by a path from the request.
A merchant's admin sees its own figures and file; another merchant's file is 404.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ledger import clearing, settlement_files
from portal.web import GET, Page, page, render

DAYS_PAGE_SIZE = 31
FIGURES_PAGE_SIZE = 100
MATRIX_PAGE_SIZE = 100
MATRIX_COLUMNS = ("program", "issuer_id", "redeemer_id", "points")
SUMMARY_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def _day(text: str) -> dt.date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(404) from None


def _directory(pg: Page) -> Path:
    return Path(pg.portal.settings.settlement_dir)


def _download(name: str, data: bytes, media_type: str) -> Response:
    return Response(data, media_type=media_type, headers={"content-disposition": f'attachment; filename="{name}"'})


@page("settlement")
async def settlement_days(request: Request, pg: Page) -> Response:
    """The cleared business days, newest first, in keyset pages."""
    before_text = request.query_params.get("before", "")
    before = None
    if before_text:
        try:
            before = dt.date.fromisoformat(before_text[:10])
        except ValueError:
            raise HTTPException(400) from None
    days = await clearing.cleared_days(pg.pool, before, DAYS_PAGE_SIZE + 1)
    next_url = None
    if len(days) > DAYS_PAGE_SIZE:
        days = days[:DAYS_PAGE_SIZE]
        next_url = str(request.url.include_query_params(before=days[-1].isoformat()))
    return render(request, "settlement/days.html", {"days": days, "next_url": next_url}, session=pg.session)


def _cursor(request: Request, name: str, chars_max: int = 40) -> str | None:
    return request.query_params.get(name, "")[:chars_max] or None


def _matrix_cursor(request: Request) -> clearing.MatrixKey | None:
    parts = [request.query_params.get(f"matrix_{k}", "")[:40] for k in ("program", "issuer", "redeemer")]
    if not any(parts):
        return None
    if not all(parts):
        raise HTTPException(400)
    return (parts[0], parts[1], parts[2])


@page("settlement_day")
async def settlement_day(request: Request, pg: Page) -> Response:
    """One day: figures per merchant and totals, a page of the matrix, the files, the recharge query.

    The merchants' figures and the matrix are pages of at most FIGURES_PAGE_SIZE and
    MATRIX_PAGE_SIZE rows (keyset: ``merchants_after``; ``matrix_program``, ``matrix_issuer``,
    ``matrix_redeemer``); the whole matrix is the streamed CSV of settlement_matrix_csv.
    """
    day = _day(request.path_params["day"])
    if not await clearing.is_cleared(pg.pool, day):
        return render(request, "settlement/day.html", {"day": day, "cleared": False}, session=pg.session)
    own = pg.own_merchant()
    matrix_after = _matrix_cursor(request)
    rows = await clearing.figures_page(pg.pool, day, own, _cursor(request, "merchants_after"), FIGURES_PAGE_SIZE + 1)
    merchants_next = None
    if len(rows) > FIGURES_PAGE_SIZE:
        rows = rows[:FIGURES_PAGE_SIZE]
        merchants_next = str(request.url.include_query_params(merchants_after=rows[-1]["merchant_id"]))
    matrix = await clearing.matrix_page(pg.pool, day, own, matrix_after, MATRIX_PAGE_SIZE + 1)
    matrix_next = None
    if len(matrix) > MATRIX_PAGE_SIZE:
        matrix = matrix[:MATRIX_PAGE_SIZE]
        program, issuer, redeemer = clearing.matrix_key(matrix[-1])
        matrix_next = str(request.url.include_query_params(
            matrix_program=program, matrix_issuer=issuer, matrix_redeemer=redeemer))
    totals = {t["currency_asset"]: t for t in await clearing.figure_totals(pg.pool, day, own)}
    summary = settlement_files.read_summary(_directory(pg), day)
    filed = set(summary.get("files", {})) if summary else set()
    recharge = {kind: str(request.url_for("transactions").include_query_params(
        go="1", type=kind, date_from=day.isoformat(), date_to=day.isoformat())) for kind in ("topup", "load")}
    return render(request, "settlement/day.html", {
        "cleared": True, "day": day, "rows": rows, "matrix": matrix, "totals": totals, "cleared_at": await clearing.cleared_at(
            pg.pool, day),
        "merchants_next": merchants_next, "matrix_next": matrix_next,
        "merchants_first": str(request.url.remove_query_params("merchants_after"))
        if _cursor(request, "merchants_after") else None,
        "matrix_first": str(request.url.remove_query_params(["matrix_program", "matrix_issuer", "matrix_redeemer"]))
        if matrix_after is not None else None,
        "filed": {r["merchant_id"] for r in rows if settlement_files.merchant_file_name(r["merchant_id"]) in filed},
        "summary_filed": summary is not None and own is None, "recharge": recharge}, session=pg.session)


@page("settlement_matrix_csv")
async def settlement_matrix_csv(request: Request, pg: Page) -> Response:
    """The day's whole matrix as CSV (a merchant's admin: its own pairs), streamed a page at a time.

    At most ledger.clearing.MATRIX_EXPORT_ROWS_MAX rows; a last line ``truncated,N`` says the bound
    cut it short.
    """
    day = _day(request.path_params["day"])
    if not await clearing.is_cleared(pg.pool, day):
        raise HTTPException(404)
    own, pool, rows_max = pg.own_merchant(), pg.pool, clearing.MATRIX_EXPORT_ROWS_MAX

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(("business_date", *MATRIX_COLUMNS))
        written, last = 0, None
        async for page_rows in clearing.matrix_pages(pool, day, own, rows_max):
            for r in page_rows:
                w.writerow((day.isoformat(), *(r[k] for k in MATRIX_COLUMNS)))
            written += len(page_rows)
            last = clearing.matrix_key(page_rows[-1])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        if written >= rows_max and last is not None and await clearing.matrix_page(pool, day, own, last, 1):
            yield f"truncated,{rows_max}\n"

    name = f"matrix-{day.isoformat()}.csv"
    return StreamingResponse(lines(), media_type=SUMMARY_MEDIA["csv"],
                             headers={"content-disposition": f'attachment; filename="{name}"'})


@page("settlement_file")
async def settlement_file(request: Request, pg: Page) -> Response:
    """A merchant's settlement CSV of a day (another merchant's: 404 for a merchant's admin)."""
    day = _day(request.path_params["day"])
    merchant_id = request.path_params["merchant_id"][:15]
    pg.require_visible(merchant_id)
    found = settlement_files.day_file(_directory(pg), day, merchant_id)
    if found is None:
        raise HTTPException(404)
    return _download(found[0], found[1], SUMMARY_MEDIA["csv"])


@page("settlement_summary")
async def settlement_summary(request: Request, pg: Page) -> Response:
    """The day's summary.csv or summary.json (the platform's users)."""
    day = _day(request.path_params["day"])
    fmt = request.path_params["fmt"]
    if fmt not in SUMMARY_MEDIA:
        raise HTTPException(404)
    if fmt == "csv":
        found = settlement_files.day_file(_directory(pg), day, None)
        if found is None:
            raise HTTPException(404)
        data = found[1]
    else:
        raw = settlement_files.summary_json(_directory(pg), day)
        if raw is None:
            raise HTTPException(404)
        data = raw
    return _download(f"summary-{day.isoformat()}.{fmt}", data, SUMMARY_MEDIA[fmt])


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/settlement", settlement_days, GET, "settlement"),
    ("/settlement/{day}", settlement_day, GET, "settlement_day"),
    ("/settlement/{day}/matrix.csv", settlement_matrix_csv, GET, "settlement_matrix_csv"),
    ("/settlement/{day}/files/{merchant_id}", settlement_file, GET, "settlement_file"),
    ("/settlement/{day}/summary/{fmt}", settlement_summary, GET, "settlement_summary"),
]

"""A settlement day's lists a page at a time (merchants' figures, the issuer x redeemer matrix,
keyset links) and the whole matrix as a streamed CSV, scoped per merchant."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from pathlib import Path

import httpx
import pytest
from ledger_support import ledger_settings
from platform_support import take_some
from portal_support import PortalEnv, logged_in, portal_env_fixture  # noqa: F401
from portal_support import test_settings as settings_for_test

from ledger import clearing, eod
from portal.app import create_app
from portal.pages import settlement

# Pairs added to the day's stored matrix beside the one the transactions made (M0001 -> M0002).
EXTRA_PAIRS = [("ALLY", "*", "M0001", 3), ("ALLY", "M0002", "M0001", 7), ("ALLY", "M0003", "M0004", 5),
               ("ALLY", "M0004", "M0002", 2), ("ALLY", "M0001", "M0003", 4)]
_ROW = re.compile(r"<tr><td>(ALLY)</td><td>([^<]*)</td><td>([^<]*)</td><td class=\"num\">")
_NEXT_PAIRS = re.compile(r'<a href="([^"]+)" rel="next">Next pairs</a>')
_NEXT_MERCHANTS = re.compile(r'<a href="([^"]+)" rel="next">Next merchants</a>')
_MERCHANT = re.compile(r"<tr><td>(M\d{4})</td><td>ALLY</td>")


async def _cleared(env: PortalEnv, tmp_path: Path) -> tuple[PortalEnv, dt.date]:
    await take_some(env.pool)
    day = await env.pool.fetchval("SELECT open_date FROM ledger.business_day")
    report = await eod.run(env.pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
    assert report.ok, report.as_dict()
    await env.pool.executemany("INSERT INTO eod.clearing_matrix(business_date, program, issuer_id, redeemer_id, points) "
                               "VALUES ($1, $2, $3, $4, $5)", [(day, *p) for p in EXTRA_PAIRS])
    settings = settings_for_test(settlement_dir=str(tmp_path))
    return PortalEnv(create_app(settings, env.pool), env.pool, settings), day


async def _walk(client: httpx.AsyncClient, path: str, row: re.Pattern[str], next_link: re.Pattern[str]
                ) -> tuple[list[tuple[str, ...]], int]:
    """Every row of a list followed through its "next" links, and the number of pages."""
    rows: list[tuple[str, ...]] = []
    pages = 0
    url: str | None = path
    while url is not None:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        pages += 1
        rows += [m if isinstance(m, tuple) else (m,) for m in row.findall(page.text)]
        found = next_link.search(page.text)
        url = html.unescape(found.group(1)) if found else None
        assert pages < 50
    return rows, pages


def _csv_pairs(text: str) -> list[tuple[str, ...]]:
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["business_date", "program", "issuer_id", "redeemer_id", "points"]
    return [tuple(r[1:4]) for r in lines[1:]]


async def test_the_matrix_and_the_merchants_come_in_pages(portal_env: PortalEnv, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    monkeypatch.setattr(settlement, "MATRIX_PAGE_SIZE", 2)
    monkeypatch.setattr(settlement, "FIGURES_PAGE_SIZE", 1)
    client = await logged_in(env, "operator")
    stored = [clearing.matrix_key(m) for m in await clearing.matrix(env.pool, day)]
    assert len(stored) == len(EXTRA_PAIRS) + 3  # and the day's own: M0001 -> M0002, M0002 -> M0002, * -> M0002
    pairs, pages = await _walk(client, f"/settlement/{day}", _ROW, _NEXT_PAIRS)
    assert pairs == stored and pages == 4  # in the matrix's order, each pair once
    merchants, pages = await _walk(client, f"/settlement/{day}", _MERCHANT, _NEXT_MERCHANTS)
    assert merchants == [("M0001",), ("M0002",)] and pages == 2
    # The totals are the day's, whatever page of merchants is shown.
    page = (await client.get(f"/settlement/{day}?merchants_after=M0001")).text
    assert "<td>M0001</td><td>ALLY</td>" not in page and f"/settlement/{day}/matrix.csv" in page
    totals = await clearing.figure_totals(env.pool, day)
    assert f'<td class="num">{totals[0]["merchants"]}</td>' in page and totals[0]["merchants"] == 2
    # A cursor cut short or out of the order is a bad request or an empty page, never a 500.
    assert (await client.get(f"/settlement/{day}?matrix_program=ALLY")).status_code == 400
    last = await client.get(f"/settlement/{day}?matrix_program=ZZZ&matrix_issuer=Z&matrix_redeemer=Z")
    assert last.status_code == 200 and "No points crossed" in last.text


async def test_a_merchant_admin_pages_through_its_own_pairs_only(portal_env: PortalEnv, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    monkeypatch.setattr(settlement, "MATRIX_PAGE_SIZE", 1)
    client = await logged_in(env, "m0001-admin")
    own = [k for k in map(clearing.matrix_key, await clearing.matrix(env.pool, day)) if "M0001" in k[1:]]
    assert len(own) == 4
    pairs, pages = await _walk(client, f"/settlement/{day}", _ROW, _NEXT_PAIRS)
    assert pairs == own and pages == 4
    merchants, _ = await _walk(client, f"/settlement/{day}", _MERCHANT, _NEXT_MERCHANTS)
    assert merchants == [("M0001",)]
    exported = await client.get(f"/settlement/{day}/matrix.csv")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert _csv_pairs(exported.text) == own
    assert (await client.get("/settlement/2024-01-02/matrix.csv")).status_code == 404
    operator = await logged_in(env, "m0001-operator")
    assert (await operator.get(f"/settlement/{day}/matrix.csv")).status_code == 403


async def test_the_whole_matrix_streams_as_csv_in_pages_within_its_bound(portal_env: PortalEnv, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    stored = [clearing.matrix_key(m) for m in await clearing.matrix(env.pool, day)]
    monkeypatch.setattr(clearing, "PAGE_ROWS_MAX", 2)  # several queries for one file
    client = await logged_in(env, "admin")
    exported = await client.get(f"/settlement/{day}/matrix.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert _csv_pairs(exported.text) == stored
    assert exported.text.splitlines()[1].startswith(f"{day.isoformat()},ALLY,")
    monkeypatch.setattr(clearing, "MATRIX_EXPORT_ROWS_MAX", 3)
    cut = (await client.get(f"/settlement/{day}/matrix.csv")).text.splitlines()
    assert len(cut) == 1 + 3 + 1 and cut[-1] == "truncated,3"


async def test_matrix_pages_are_bounded(portal_env: PortalEnv, tmp_path: Path) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    everything = await clearing.matrix_page(env.pool, day, None, None, 10**9)
    assert len(everything) == len(EXTRA_PAIRS) + 3
    assert len(await clearing.matrix_page(env.pool, day, None, None, 0)) == 1
    pages = [p async for p in clearing.matrix_pages(env.pool, day, "M0002", rows_max=10**9)]
    assert [clearing.matrix_key(m) for p in pages for m in p] == [
        k for k in map(clearing.matrix_key, everything) if "M0002" in k[1:]]

"""Settlement pages: a cleared day's figures, the matrix, the files, scoped per merchant."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ledger_support import ledger_settings
from platform_support import take_some
from portal_support import PortalEnv, logged_in, portal_env_fixture  # noqa: F401
from portal_support import test_settings as settings_for_test

from ledger import eod
from portal.app import create_app


async def _cleared(env: PortalEnv, tmp_path: Path) -> tuple[PortalEnv, dt.date]:
    """A day with transactions at M0001 and M0002, cleared, its files under tmp_path."""
    await take_some(env.pool)
    day = await env.pool.fetchval("SELECT open_date FROM ledger.business_day")
    report = await eod.run(env.pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
    assert report.ok, report.as_dict()
    settings = settings_for_test(settlement_dir=str(tmp_path))
    return PortalEnv(create_app(settings, env.pool), env.pool, settings), day


async def test_the_platform_sees_every_merchant_the_matrix_and_the_files(portal_env: PortalEnv,
                                                                           tmp_path: Path) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    client = await logged_in(env, "operator")
    assert day.isoformat() in (await client.get("/settlement")).text
    page = (await client.get(f"/settlement/{day}")).text
    assert "<td>M0001</td>" in page and "<td>M0002</td>" in page
    assert "<td>ALLY</td><td>M0001</td><td>M0002</td>" in page  # M0001's points redeemed at M0002
    assert f"/settlement/{day}/files/M0001" in page and f"/settlement/{day}/summary/json" in page
    assert "type=topup" in page and "type=load" in page
    file = await client.get(f"/settlement/{day}/files/M0001")
    assert file.status_code == 200 and file.content == (tmp_path / day.isoformat() / "merchant-M0001.csv").read_bytes()
    assert "attachment" in file.headers["content-disposition"]
    summary = await client.get(f"/settlement/{day}/summary/json")
    assert json.loads(summary.content)["business_date"] == day.isoformat()
    assert (await client.get(f"/settlement/{day}/summary/csv")).text.startswith("business_date,")
    for bad in ("summary/xml", "files/M9999", "files/..%2Fsummary.json", "summary/..%2F..%2Fetc"):
        assert (await client.get(f"/settlement/{day}/{bad}")).status_code == 404, bad
    assert (await client.get("/settlement/2024-13-01")).status_code == 404
    assert (await client.get("/settlement/..%2F..")).status_code == 404


async def test_a_merchant_admin_sees_its_own_figures_and_file_only(portal_env: PortalEnv, tmp_path: Path) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    client = await logged_in(env, "m0001-admin")
    page = (await client.get(f"/settlement/{day}")).text
    assert "<td>M0001</td>" in page and "/files/M0002" not in page and "summary/csv" not in page
    assert (await client.get(f"/settlement/{day}/files/M0001")).status_code == 200
    assert (await client.get(f"/settlement/{day}/files/M0002")).status_code == 404
    assert (await client.get(f"/settlement/{day}/summary/csv")).status_code == 403
    operator = await logged_in(env, "m0001-operator")
    assert (await operator.get(f"/settlement/{day}/files/M0001")).status_code == 403


async def test_a_tampered_file_is_not_served(portal_env: PortalEnv, tmp_path: Path) -> None:
    env, day = await _cleared(portal_env, tmp_path)
    (tmp_path / day.isoformat() / "merchant-M0001.csv").write_text("field,value\nnet_minor,999999\n")
    client = await logged_in(env, "admin")
    assert (await client.get(f"/settlement/{day}/files/M0001")).status_code == 404


async def test_a_day_not_cleared(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    response = await client.get("/settlement/2024-01-02")
    assert response.status_code == 200 and 'class="notice"' in response.text
    assert (await client.get("/settlement?before=nonsense")).status_code == 400

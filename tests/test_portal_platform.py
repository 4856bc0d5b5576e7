"""Platform pages: the transaction CSV export (masked, bounded, scoped) and the audit log search."""

from __future__ import annotations

import csv
import io

import pytest
from platform_support import PAN1, take_some
from portal_support import PortalEnv, csrf_of, logged_in, portal_env_fixture, post_form  # noqa: F401

from ledger.loyalty.rules import mask_pan
from portal.pages import transactions as transactions_page


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_export_is_masked_and_scoped(portal_env: PortalEnv) -> None:
    await take_some(portal_env.pool)
    client = await logged_in(portal_env, "admin")
    response = await client.get("/transactions/export?type=earn")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = _rows(response.text)
    assert len(rows) == 3 and {r["merchant_id"] for r in rows} == {"M0001", "M0002"}
    assert PAN1 not in response.text and mask_pan(PAN1) in {r["pan"] for r in rows}
    merchant = await logged_in(portal_env, "m0001-operator")
    rows = _rows((await merchant.get("/transactions/export?merchant=M0002")).text)
    assert rows and {r["merchant_id"] for r in rows} == {"M0001"}


async def test_export_by_card_number_only_by_post(portal_env: PortalEnv) -> None:
    await take_some(portal_env.pool)
    client = await logged_in(portal_env, "operator")
    assert (await client.get(f"/transactions/export?pan={PAN1}")).status_code == 400
    response = await post_form(client, "/transactions", "/transactions/export", pan=PAN1)
    assert response.status_code == 200
    rows = _rows(response.text)
    assert rows and {r["pan"] for r in rows} == {mask_pan(PAN1)} and PAN1 not in response.text
    # The search page's export form carries the card number sealed, never in clear.
    page = (await client.post("/transactions", data={"csrf_token": csrf_of((await client.get("/transactions")).text),
                                                      "pan": PAN1})).text
    assert 'action="/transactions/export"' in page and PAN1 not in page
    refused = await client.post("/transactions/export", data={"pan": PAN1})
    assert refused.status_code == 403  # no CSRF token


async def test_export_is_bounded(portal_env: PortalEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    await take_some(portal_env.pool)
    monkeypatch.setattr(transactions_page, "EXPORT_ROWS_MAX", 2)
    client = await logged_in(portal_env, "admin")
    text = (await client.get("/transactions/export")).text
    lines = text.strip().split("\n")
    assert len(lines) == 1 + 2 + 1 and lines[-1] == "truncated,2"
    assert (await client.get("/transactions/export?date_from=someday")).status_code == 400


async def test_audit_search_finds_a_change(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    response = await post_form(client, "/merchants/M0002/edit", name="Coffee <b>&</b> Co", earn_rate="2",
                               fees="50")
    assert response.status_code == 303
    operator = await logged_in(portal_env, "operator")
    page = (await operator.get("/audit?actor=portal:adm&action=merchant_&object_id=M0002")).text
    assert "merchant_edit" in page and "portal:admin" in page
    assert "Coffee &lt;b&gt;&amp;&lt;/b&gt; Co" in page and "<b>&</b>" not in page  # JSON, escaped
    assert '"name": "Alliance Coffee"' not in page and "&#34;name&#34;: &#34;Alliance Coffee&#34;" in page
    assert "merchant_edit" not in (await operator.get("/audit?object_id=M0001")).text
    assert "merchant_edit" not in (await operator.get("/audit?date_to=2000-01-01")).text
    assert (await operator.get("/audit?date_from=nonsense")).status_code == 400
    assert (await operator.get("/audit?before=x")).status_code == 400


async def test_audit_pages_are_keyset(portal_env: PortalEnv) -> None:
    await portal_env.pool.execute(
        "INSERT INTO portal.audit(actor, action, object_kind, object_id) "
        "SELECT 'cli:root', 'test_' || i, 'thing', i::text FROM generate_series(1, 120) i")
    client = await logged_in(portal_env, "admin")
    page = (await client.get("/audit?actor=cli:")).text
    assert "test_120" in page and "test_70" not in page and 'rel="next"' in page
    nxt = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = (await client.get(nxt)).text
    assert "test_70" in second and "test_120" not in second

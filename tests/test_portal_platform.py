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


async def test_programs_add_view_and_lottery_by_the_admin(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    response = await post_form(client, "/programs/new", code="ZED", name="Zed <i>Club</i>", kind="hosted",
                               currency="156", issue_price_minor="3", redeem_value_minor="2",
                               txn_max_points="5000", pin_required_for_redeem="1")
    assert response.status_code == 303 and response.headers["location"] == "/programs/ZED"
    page = (await client.get("/programs/ZED")).text
    assert "Zed &lt;i&gt;Club&lt;/i&gt;" in page and "<i>Club</i>" not in page
    row = await portal_env.pool.fetchrow("SELECT kind, issue_price_minor, pin_required_for_redeem, txn_max_points, "
                                         "pin_required_for_sv FROM loyalty.programs WHERE code = 'ZED'")
    assert tuple(row) == ("hosted", 3, True, 5000, False)  # the stored-value box was not ticked
    response = await post_form(client, "/programs/ZED/lottery", price_points="7", prizes="NONE:0:9\nWIN:50:1")
    assert response.status_code == 303
    prizes = await portal_env.pool.fetch("SELECT code, points, weight FROM loyalty.lottery_prizes "
                                         "WHERE program = 'ZED' ORDER BY code")
    assert [tuple(p) for p in prizes] == [("NONE", 0, 9), ("WIN", 50, 1)]
    actions = {r["action"] for r in await portal_env.pool.fetch(
        "SELECT action FROM portal.audit WHERE object_kind = 'program' AND object_id = 'ZED'")}
    assert actions == {"program_add", "program_lottery"}
    for form in ({"code": "ZED", "name": "again", "kind": "hosted"}, {"code": "bad code", "name": "x"},
                 {"code": "NEW", "name": "x", "issue_price_minor": "-1"}):
        response = await post_form(client, "/programs/new", **{"kind": "alliance", "currency": "156",
                                                               "issue_price_minor": "1", "redeem_value_minor": "1",
                                                               "txn_max_points": "10", **form})
        assert response.status_code == 400 and 'role="alert"' in response.text, form
    bad = await post_form(client, "/programs/ZED/lottery", price_points="7", prizes="WIN:lots:1")
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert (await client.get("/programs/NOPE")).status_code == 404


async def test_the_platform_operator_reads_but_changes_nothing(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "operator")
    for path in ("/programs", "/programs/ALLY", "/fees", "/bins"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert "/programs/new" not in page.text and "/bins/new" not in page.text and "/fees/M0001" not in page.text
    for path, form in (("/programs/ALLY/lottery", {"price_points": "1", "prizes": "A:1:1"}),
                       ("/fees/M0001", {"fees": "0"}), ("/bins/new", {"range": "999999"}),
                       ("/bins/remove", {"range": "621234"})):
        response = await post_form(client, "/programs", path, **form)
        assert response.status_code == 403, path
    assert await portal_env.pool.fetchval("SELECT count(*) FROM loyalty.bin_ranges WHERE prefix = '999999'") == 0


async def test_fee_schedule_of_a_merchant(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    assert "<td>M0001</td>" in (await client.get("/fees?q=M000")).text
    response = await post_form(client, "/fees/M0001", fees="40, redeem=25")
    assert response.status_code == 303
    row = await portal_env.pool.fetchrow("SELECT name, earn_num, fee_bps FROM loyalty.merchants "
                                         "WHERE merchant_id = 'M0001'")
    assert row["name"] == "Alliance Books" and row["earn_num"] == 1
    assert row["fee_bps"] == {"default": 40, "redeem": 25}
    assert await portal_env.pool.fetchval("SELECT count(*) FROM portal.audit WHERE action = 'merchant_fees'") == 1
    bad = await post_form(client, "/fees/M0001", fees="wash=5")
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert (await client.get("/fees/NOPE")).status_code == 404


async def test_bin_ranges_add_and_remove(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    response = await post_form(client, "/bins", "/bins/new", range="62200000-62299999", description="Test <b>")
    assert response.status_code == 303
    page = (await client.get("/bins")).text
    assert "<td>6220</td>" in page and "<td>6229</td>" in page  # a range is stored as its prefixes
    stored = {r["prefix"] for r in await portal_env.pool.fetch("SELECT prefix FROM loyalty.bin_ranges")}
    assert "6220" in stored and "Test &lt;b&gt;" in page
    overlap = await post_form(client, "/bins", "/bins/new", range="62201")
    assert overlap.status_code == 400 and "overlaps" in overlap.text
    assert (await post_form(client, "/bins", "/bins/new", range="12")).status_code == 400
    assert (await post_form(client, "/bins", "/bins/remove", range="6220")).status_code == 303
    assert "6220" not in {r["prefix"] for r in await portal_env.pool.fetch("SELECT prefix FROM loyalty.bin_ranges")}
    assert (await post_form(client, "/bins", "/bins/remove", range="6220")).status_code == 400


async def test_platform_pages_have_one_h1_labels_and_header_cells(portal_env: PortalEnv) -> None:
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str] = []
            self.labels: set[str] = set()
            self.h1 = self.th = self.tables = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
                self.ids.append(a.get("id") or "<no id>")
            if tag == "label":
                self.labels.add(a.get("for") or "")
            self.h1 += tag == "h1"
            self.th += tag == "th"
            self.tables += tag == "table"

    await take_some(portal_env.pool)
    admin = await logged_in(portal_env, "admin")
    merchant = await logged_in(portal_env, "m0001-admin")
    pages = [(admin, p) for p in ("/stats", "/stats?period=month", "/settlement", "/settlement/2024-01-02", "/audit",
                                  "/audit?actor=x", "/programs", "/programs/ALLY", "/programs/new",
                                  "/programs/ALLY/lottery", "/fees", "/fees/M0001", "/bins")]
    pages += [(merchant, p) for p in ("/stats", "/settlement")]
    for client, path in pages:
        response = await client.get(path)
        assert response.status_code == 200, path
        parsed = Page()
        parsed.feed(response.text)
        assert parsed.h1 == 1, path
        assert set(parsed.ids) <= parsed.labels, (path, set(parsed.ids) - parsed.labels)
        assert parsed.th >= parsed.tables, path


async def test_chinese_labels_on_the_platform_pages(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    for path, label in (("/stats?lang=zh_CN", "统计"), ("/settlement?lang=zh_CN", "结算"),
                        ("/audit?lang=zh_CN", "审计日志"), ("/programs?lang=zh_CN", "计划"),
                        ("/bins?lang=zh_CN", "BIN 段"), ("/fees?lang=zh_CN", "费率表")):
        assert f"<h1>{label}</h1>" in (await client.get(path)).text, path

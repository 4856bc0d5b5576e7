"""The portal's pages over HTTP: merchants, operators, profile, transactions, languages, headers."""

from __future__ import annotations

import asyncpg
from portal_support import (
    PortalEnv,
    logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)

from ledger.loyalty import card_numbers
from portal.security_headers import CSP


async def test_login_and_home(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    home = await client.get("/")
    assert home.status_code == 200, home.text
    assert "Platform Admin" in home.text
    assert home.text.count("<h1") == 1


async def _no_inline_script(text: str) -> None:
    assert "<script" not in text and " style=" not in text and "javascript:" not in text


async def test_security_headers_everywhere(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    for path in ("/login", "/", "/merchants", "/static/portal.css", "/no/such/page", "/merchants/NOPE"):
        response = await client.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert "frame-ancestors 'none'" in CSP and "default-src 'self'" in CSP
        assert "unsafe-inline" not in CSP
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        if not path.startswith("/static"):
            assert response.headers["cache-control"] == "no-store", path
            await _no_inline_script(response.text)
    assert (await client.get("/no/such/page")).status_code == 404


async def test_a_merchant_named_like_a_script_is_harmless(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    evil = "<script>alert(1)</script>"
    response = await post_form(client, "/merchants/new", merchant_id="MEVIL", name=evil, program="ALLY",
                               earn_rate="1", fees="10")
    assert response.status_code == 303, response.text
    for path in ("/merchants/MEVIL", "/merchants?q=MEVIL", "/merchants/MEVIL/edit"):
        page = (await client.get(path)).text
        assert evil not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
    # And where the merchant's own users see it.
    await portal_env.pool.execute("UPDATE loyalty.merchants SET description = $1 WHERE merchant_id = 'M0001'", evil)
    own = await logged_in(portal_env, "m0001-admin")
    assert evil not in (await own.get("/profile")).text


async def test_merchant_add_edit_disable_through_the_ledger_with_audit(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    bad = await post_form(client, "/merchants/new", merchant_id="M0001", name="Dup", program="ALLY",
                          earn_rate="1", fees="0")
    assert bad.status_code == 400 and "already exists" in bad.text
    created = await post_form(client, "/merchants/new", merchant_id="M0100", name="New Shop", program="ALLY",
                              earn_rate="3/2", fees="50, redeem=30")
    assert created.status_code == 303 and created.headers["location"] == "/merchants/M0100"
    listing = (await client.get("/merchants?q=new+shop")).text
    assert "M0100" in listing and "M0001" not in listing
    edited = await post_form(client, "/merchants/M0100/edit", name="Renamed Shop", earn_rate="2", fees="40")
    assert edited.status_code == 303
    assert (await post_form(client, "/merchants/M0100", "/merchants/M0100/status",
                            status="disabled")).status_code == 303
    row = await portal_env.pool.fetchrow("SELECT name, earn_num, earn_den, fee_bps, status FROM loyalty.merchants "
                                         "WHERE merchant_id = 'M0100'")
    assert (row["name"], row["earn_num"], row["earn_den"], row["status"]) == ("Renamed Shop", 2, 1, "disabled")
    assert row["fee_bps"] == {"default": 40}
    disabled_list = (await client.get("/merchants?status=disabled")).text
    assert "M0100" in disabled_list and "M0001" not in disabled_list
    audit = await portal_env.pool.fetch("SELECT actor, action, before, after FROM portal.audit "
                                        "WHERE object_id = 'M0100' ORDER BY id")
    assert [a["action"] for a in audit] == ["merchant_add", "merchant_edit", "merchant_disabled"]
    assert audit[1]["before"]["name"] == "New Shop" and audit[1]["after"]["name"] == "Renamed Shop"
    assert all(a["actor"] == "portal:admin" for a in audit)


async def test_merchant_admin_edits_its_profile(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-admin")
    response = await post_form(client, "/profile/edit", description="Books since 1990",
                               contact_name="Ann", contact_email="ann@example.com", contact_phone="+86 10 1234")
    assert response.status_code == 303
    page = (await client.get("/profile")).text
    assert "Books since 1990" in page and "ann@example.com" in page
    assert await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.audit WHERE action = 'merchant_profile' AND merchant_id = 'M0001'") == 1


async def _transactions(pool: asyncpg.Pool, n: int) -> str:
    from ledger.loyalty.demo import demo_pan

    pan = demo_pan(1)
    await pool.execute("INSERT INTO loyalty.transactions(business_date, txn_type, reason, merchant_id, terminal_id, program, "
        "amount, currency, points_delta, money_delta_minor, fee_minor, idempotency_key, rrn, card_id) "
        "SELECT current_date, 'earn', 'approved', 'M0001', 'T0000001', 'ALLY', 1234, '156', 12, 0, 0, "
        "'k-' || i, lpad(i::text, 12, '0'), (SELECT id FROM loyalty.cards WHERE id = $1) "
        "FROM generate_series(1, $2) i", await card_numbers.card_id_by_number(pool, pan), n)
    return pan


async def test_transaction_search_masks_cards_and_takes_a_card_number_only_by_post(portal_env: PortalEnv) -> None:
    pan = await _transactions(portal_env.pool, 60)
    client = await logged_in(portal_env, "operator")
    page = await client.get("/transactions?merchant=M0001")
    assert page.status_code == 200
    assert pan not in page.text and f"{pan[:6]}******{pan[-4:]}" in page.text
    assert "CN¥12.34" in page.text
    assert page.text.count("<td>T0000001</td>") == portal_env.settings.page_size_default
    # Keyset paging: the next page is the rest.
    next_link = page.text.split('rel="next"', 1)[0].rsplit('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    rest = await client.get(next_link)
    assert rest.text.count("<td>T0000001</td>") == 60 - portal_env.settings.page_size_default
    # A full card number in a URL is refused, in a POST body it is searched (and never echoed).
    assert (await client.get(f"/transactions?pan={pan}")).status_code == 400
    by_card = await post_form(client, "/transactions", pan=pan)
    assert by_card.status_code == 200 and pan not in by_card.text
    assert by_card.text.count("<td>T0000001</td>") == portal_env.settings.page_size_default
    assert 'name="pan_ref"' in by_card.text
    ref = by_card.text.split('name="pan_ref" value="', 1)[1].split('"', 1)[0]
    second = await post_form(client, "/transactions", pan_ref=ref, before_id=by_card.text.split(
        'name="before_id" value="', 1)[1].split('"', 1)[0])
    assert second.text.count("<td>T0000001</td>") == 60 - portal_env.settings.page_size_default
    other_card = await post_form(client, "/transactions", pan="4111111111111111")
    assert other_card.text.count("<td>T0000001</td>") == 0
    assert (await post_form(client, "/transactions", pan="4111111111111112")).status_code == 400


async def test_language_from_header_query_and_cookie(portal_env: PortalEnv) -> None:
    client = portal_env.client()
    page = await client.get("/login", headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert "<h1>登录</h1>" in page.text and 'lang="zh-CN"' in page.text
    client = await logged_in(portal_env, "admin")
    assert "<h1>Merchants</h1>" in (await client.get("/merchants")).text
    assert "<h1>商户</h1>" in (await client.get("/merchants?lang=zh_CN")).text
    assert "<h1>商户</h1>" in (await client.get("/merchants")).text  # remembered
    assert "<h1>Merchants</h1>" in (await client.get("/merchants?lang=en")).text


def test_every_message_has_a_chinese_translation() -> None:
    from pathlib import Path

    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    import portal

    root = Path(portal.__file__).resolve().parent
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    used = {m[2] if isinstance(m[2], str) else m[2][0]
            for m in extract_from_dir(str(root), method_map, options, keywords=keywords)}
    translated: set[str] = set()
    for path in sorted((root / "locale" / "zh_CN" / "LC_MESSAGES").glob("*.po")):  # one per area
        with path.open("rb") as f:
            catalog = read_po(f)
        translated |= {m.id if isinstance(m.id, str) else m.id[0] for m in catalog
                       if m.id and (m.string if isinstance(m.string, str) else all(m.string or ()))}
    assert used and used - translated == set()


async def test_every_control_has_a_label_and_every_page_one_h1(portal_env: PortalEnv) -> None:
    from html.parser import HTMLParser

    class Controls(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str] = []
            self.labels: set[str] = set()
            self.h1 = 0
            self.th = 0
            self.tables = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
                self.ids.append(a.get("id") or "<no id>")
            if tag == "label":
                self.labels.add(a.get("for") or "")
            self.h1 += tag == "h1"
            self.th += tag == "th"
            self.tables += tag == "table"

    admin = await logged_in(portal_env, "admin")
    merchant = await logged_in(portal_env, "m0001-admin")
    op = await portal_env.pool.fetchval("SELECT id FROM portal.users WHERE login = 'm0001-operator'")
    pages = [(admin, p) for p in ("/", "/merchants", "/merchants/new", "/merchants/M0001", "/merchants/M0001/edit",
                                  "/operators", "/operators/new", f"/operators/{op}", "/transactions", "/password",
                                  "/transactions?go=1")]
    pages += [(merchant, p) for p in ("/profile", "/profile/edit", "/operators", "/operators/new")]
    pages += [(portal_env.client(), "/login")]
    for client, path in pages:
        response = await client.get(path)
        assert response.status_code == 200, path
        parsed = Controls()
        parsed.feed(response.text)
        assert parsed.h1 == 1, path
        assert set(parsed.ids) <= parsed.labels, (path, set(parsed.ids) - parsed.labels)
        assert parsed.th >= parsed.tables, path


async def test_request_body_is_bounded(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    response = await client.post("/merchants/new", content=b"a=" + b"x" * (portal_env.settings.request_body_max_bytes
                                                                         + 1),
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413

"""A member's own pages: profile, balances, history over every channel, points rates, cards.

Each page shows the logged-in member's data only; another member's card ids answer 404.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import asyncpg
import httpx
import pytest
from ledger_support import ledger_settings
from portal_support import (
    MASTER_KEY,
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)
from portal_support import test_settings as portal_settings

from ledger import commands, search
from ledger.audit import check_books
from ledger.loyalty import card_numbers, cards, demo, seat
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Channel, Reason, Request, TxnType
from ledger.loyalty.rules import luhn_complete
from portal.app import create_app

PAN1, PAN2 = demo.demo_pan(1), demo.demo_pan(2)
MASKED1 = f"{PAN1[:6]}******{PAN1[-4:]}"
_n = itertools.count(1)


async def _card_id(pool: asyncpg.Pool, pan: str) -> int:
    return int(await pool.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(pool, pan)))


async def earn(loyalty: Loyalty, channel: str, pan: str = PAN1, points_amount: int = 1_000) -> None:
    """An approved earn on ``pan`` at M0001 taken through ``channel`` (as its front end would key it)."""
    n = next(_n)
    req = Request(key=f"{channel}|{n}", terminal_id="T0000001", merchant_id="M0001", pan=pan, amount=points_amount,
                  currency="156", rrn=f"7{n:011d}", stan=f"{n:06d}", account=TxnType.EARN.account,
                  channel=channel, operator_ref=None if channel == Channel.TERMINAL else f"{channel}-op")
    outcome = await loyalty.execute(TxnType.EARN, req)
    assert outcome.reason is Reason.APPROVED, outcome.reason


def _loyalty(env: PortalEnv) -> Loyalty:
    loyalty = env.app.state.portal.loyalty
    assert loyalty is not None
    return loyalty


async def test_profile_shows_and_edits_the_members_own_data(portal_env: PortalEnv) -> None:
    client = await member_logged_in(portal_env)
    page = await client.get("/member/profile")
    assert page.status_code == 200 and "Demo Member 1" in page.text and "13800000001" in page.text
    saved = await post_form(client, "/member/profile/edit", name="Ada Lovelace", phone="+86 139 0000 0077",
                            email="ada@example.org", delivery_address="1 Analytical Way\nLondon")
    assert saved.status_code == 303 and saved.headers["location"] == "/member/profile?saved=1"
    page = await client.get("/member/profile?saved=1")
    assert "Ada Lovelace" in page.text and "+8613900000077" in page.text and "ada@example.org" in page.text
    assert "1 Analytical Way" in page.text
    # The card's old columns follow the member's; the change is audited as the member's.
    card = await portal_env.pool.fetchrow("SELECT name, phone FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    assert dict(card) == {"name": "Ada Lovelace", "phone": "+8613900000077"}
    entry = await portal_env.pool.fetchrow(
        "SELECT actor, before->>'name' AS before, after->>'phone' AS phone FROM portal.audit "
        "WHERE action = 'member_profile_edit'")
    assert entry["before"] == "Demo Member 1" and entry["phone"] == "+8613900000077"
    assert entry["actor"].startswith("member:")
    # The new phone logs in; the old one no longer does.
    await member_logged_in(portal_env, "+86 139 0000 0077", "10.0.0.20")  # asserts the login succeeded


async def test_a_phone_of_another_member_is_refused_in_words(portal_env: PortalEnv) -> None:
    client = await member_logged_in(portal_env)
    taken = await post_form(client, "/member/profile/edit", name="Me", phone="138-0000-0002", email="",
                            delivery_address="")
    assert taken.status_code == 400 and "belongs to another member" in taken.text
    zh = await client.post("/member/profile/edit?lang=zh_CN", data={
        "csrf_token": csrf_of(taken.text), "name": "Me", "phone": "13800000002", "email": "", "delivery_address": ""})
    assert zh.status_code == 400 and "该手机号已属于另一位会员" in zh.text
    await client.get("/member/profile?lang=en")  # the language is remembered: back to English
    bad = await post_form(client, "/member/profile/edit", name="Me", phone="12", email="not-mail",
                          delivery_address="")
    assert bad.status_code == 400 and "5 to 20 digits" in bad.text
    bad_mail = await post_form(client, "/member/profile/edit", name="Me", phone="", email="not-mail",
                               delivery_address="")
    assert bad_mail.status_code == 400 and "e-mail" in bad_mail.text
    assert await portal_env.pool.fetchval(
        "SELECT m.phone FROM loyalty.members m JOIN loyalty.cards c ON c.member_id = m.id WHERE c.id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, PAN1)) == "13800000001"


async def test_balances_show_points_stored_value_and_holds(portal_env: PortalEnv) -> None:
    loyalty = _loyalty(portal_env)
    await earn(loyalty, Channel.TERMINAL, points_amount=2_000)
    load = await seat.take(loyalty, "M0001", "op", seat.new_request_id(), "load", PAN1, 5_000, "156")
    assert load.approved
    # 7 points held, as an order waiting for its merchant holds them.
    card_points, outstanding = await portal_env.pool.fetchrow("SELECT a.id, p.points_outstanding_account_id FROM ledger.accounts a JOIN loyalty.cards c "
        "ON a.owner_kind = 'card' AND a.owner_id = c.id::text JOIN loyalty.programs p ON p.points_asset = a.asset "
        "WHERE c.id = $1 AND p.code = 'ALLY'", await card_numbers.card_id_by_number(portal_env.pool, PAN1))
    held = await loyalty.ledger.post(commands.hold("test-hold", commands.Leg(card_points, outstanding, 7), 600))
    assert held.ok and held.journal_id is not None
    client = await member_logged_in(portal_env)
    page = await client.get("/member/balances")
    assert page.status_code == 200 and MASKED1 in page.text and PAN1 not in page.text
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0]
    assert "<td>ALLY</td>" in rows and '<td class="num">20</td><td class="num">7</td><td class="num">13</td>' in rows
    assert "¥50.00" in rows and PAN2[-4:] not in rows  # member 2's card is not member 1's
    assert "我的余额" in (await client.get("/member/balances?lang=zh_CN")).text
    hold_id = await portal_env.pool.fetchval("SELECT id FROM ledger.holds ORDER BY id DESC LIMIT 1")
    assert (await loyalty.ledger.post(commands.void("test-hold-void", hold_id))).ok


async def test_rates_show_each_active_programs_prices(portal_env: PortalEnv) -> None:
    client = await member_logged_in(portal_env)
    rates = await portal_env.pool.fetch(
        "SELECT code, name, issue_price_minor FROM loyalty.programs WHERE status = 'active'")
    await portal_env.pool.execute("UPDATE loyalty.programs SET status = 'disabled' WHERE code = 'CAFE'")
    page = await client.get("/member/rates")
    assert page.status_code == 200
    for r in rates:
        assert (f">{r['code']}<" in page.text) == (r["code"] != "CAFE")
    assert "Redemption value per point" in page.text


async def test_history_shows_every_channel_and_filters(portal_env: PortalEnv) -> None:
    loyalty = _loyalty(portal_env)
    for channel in Channel:
        await earn(loyalty, channel)
    await earn(loyalty, Channel.TERMINAL, pan=PAN2)  # another member's: never shown
    client = await member_logged_in(portal_env)
    page = (await client.get("/member/history")).text
    for label in ("Terminal", "Web seat", "Points mall", "App", "Operator (command line)"):
        assert f"<td>{label}</td>" in page, label
    assert page.count(f"<td>{MASKED1}</td>") == len(Channel) and PAN2[-4:] not in page
    mall = (await client.get("/member/history?channel=mall")).text
    assert mall.count("<td>Points mall</td>") == 1 and "<td>Terminal</td>" not in mall
    card = await _card_id(portal_env.pool, PAN1)
    assert (await client.get(f"/member/history?card={card}")).text.count(f"<td>{MASKED1}</td>") == len(Channel)
    future = (await client.get("/member/history?date_from=2999-01-01")).text
    assert "No transactions." in future
    assert (await client.get("/member/history?date_from=tomorrow")).status_code == 400
    zh = (await client.get("/member/history?lang=zh_CN")).text
    assert "积分商城" in zh and "我的交易" in zh


async def test_another_members_card_is_not_found(portal_env: PortalEnv) -> None:
    other = await _card_id(portal_env.pool, PAN2)
    client = await member_logged_in(portal_env)
    assert (await client.get(f"/member/history?card={other}")).status_code == 404
    assert (await client.get("/member/history?card=99999999")).status_code == 404
    token = csrf_of((await client.get("/member/cards")).text)
    for target in (other, 99999999):
        blocked = await client.post(f"/member/cards/{target}/block", data={"csrf_token": token, "confirm": "yes"})
        assert blocked.status_code == 404
    assert await portal_env.pool.fetchval("SELECT status FROM loyalty.cards WHERE id = $1", other) == "active"


async def test_member_blocks_a_lost_card_and_cannot_unblock_it(portal_env: PortalEnv) -> None:
    client = await member_logged_in(portal_env)
    listing = (await client.get("/member/cards")).text
    assert MASKED1 in listing and "Block card" in listing
    card = await _card_id(portal_env.pool, PAN1)
    done = await post_form(client, "/member/cards", f"/member/cards/{card}/block", confirm="yes")
    assert done.status_code == 303
    assert await portal_env.pool.fetchval("SELECT status FROM loyalty.cards WHERE id = $1", card) == "blocked"
    after = (await client.get("/member/cards?blocked=1")).text
    assert "Blocked" in after and "Block card" not in after and "ask the merchant" in after
    assert await portal_env.pool.fetchval(
        "SELECT count(*) FROM portal.audit WHERE action = 'card_blocked' AND actor LIKE 'member:%'") == 1
    # A blocked card still logs its member in (and shows its history).
    assert (await (await member_logged_in(portal_env, PAN1, "10.0.0.30")).get("/member/history")).status_code == 200


@pytest.fixture(name="small_pages")
async def small_pages_fixture(pool: asyncpg.Pool, portal_env: PortalEnv) -> AsyncIterator[PortalEnv]:
    """The same database served with three rows a page."""
    settings = portal_settings(page_size_default=3)
    app = create_app(settings, pool, ledger_settings(), MASTER_KEY)
    async with app.router.lifespan_context(app):
        yield PortalEnv(app, pool, settings)
    assert await check_books(pool) == []


async def test_history_pages(small_pages: PortalEnv) -> None:
    loyalty = _loyalty(small_pages)
    for _ in range(7):
        await earn(loyalty, Channel.API, points_amount=100)
    client = await member_logged_in(small_pages)
    seen: list[int] = []
    url: str | None = "/member/history"
    while url is not None:
        page = await client.get(url)
        assert page.status_code == 200
        seen.append(page.text.count("<td>App</td>"))
        url = _next_url(page)
    assert seen == [3, 3, 1]


def _next_url(page: httpx.Response) -> str | None:
    marker = 'rel="next"'
    if marker not in page.text:
        return None
    href = page.text.split(marker, 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
    return href.replace("&amp;", "&").removeprefix("http://testserver")


class _Controls(HTMLParser):
    """Counts a page's h1s and collects its controls' ids and its labels' targets."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.labels: set[str] = set()
        self.h1 = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.ids.append(a.get("id") or "<no id>")
        if tag == "label":
            self.labels.add(a.get("for") or "")
        self.h1 += tag == "h1"


async def test_every_member_page_has_one_h1_and_labelled_controls_in_both_languages(portal_env: PortalEnv) -> None:
    member = await member_logged_in(portal_env)
    merchant = await logged_in(portal_env, "m0001-admin")
    await earn(_loyalty(portal_env), Channel.WEB)
    card = await _card_id(portal_env.pool, PAN1)
    pages = [(member, p) for p in ("/member", "/member/profile", "/member/profile/edit", "/member/balances",
                                   "/member/history", "/member/rates", "/member/cards", "/member/password")]
    pages += [(merchant, p) for p in ("/members/new", f"/members/{card}", f"/members/{card}/edit")]
    for lang in ("zh_CN", "en"):
        for client, path in pages:
            response = await client.get(f"{path}?lang={lang}")
            assert response.status_code == 200, path
            parsed = _Controls()
            parsed.feed(response.text)
            assert parsed.h1 == 1, path
            assert set(parsed.ids) <= parsed.labels, (path, set(parsed.ids) - parsed.labels)
            assert PAN1 not in response.text, path


async def test_member_history_pages_every_card_newest_day_first(pool: asyncpg.Pool) -> None:
    """ledger.search.member_history against the plain query: every row of the member's cards once, in
    (business day, id) order, across pages; a card filter; nobody else's rows."""
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn, cards=3)
        member = await conn.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1",
            await card_numbers.card_id_by_number(conn, PAN1))
        # A second card of the member, and rows on all three cards over a few days, in shuffled order.
        await cards.issue_card(conn, luhn_complete(f"{demo.DEMO_BIN}555000001"), member_id=member)
        await conn.execute(
            "INSERT INTO loyalty.transactions(business_date, txn_type, reason, merchant_id, program, amount, "
            "currency, points_delta, money_delta_minor, fee_minor, idempotency_key, card_id, channel) "
            "SELECT current_date - ((i * 7) % 5), 'earn', 'approved', 'M0001', 'ALLY', 100, '156', 1, 0, 0, "
            "'h-' || i, (SELECT id FROM loyalty.cards ORDER BY id OFFSET (i % 4) LIMIT 1), "
            "(ARRAY['terminal', 'web', 'mall', 'api'])[1 + i % 4] FROM generate_series(1, 60) i")
    expected = [(r["business_date"].isoformat(), r["id"]) for r in await pool.fetch(
        "SELECT t.business_date, t.id FROM loyalty.transactions t JOIN loyalty.cards c ON c.id = t.card_id "
        "WHERE c.member_id = $1 ORDER BY t.business_date DESC, t.id DESC", member)]
    assert len(expected) == 30
    seen: list[tuple[str, int]] = []
    before = None
    while True:
        page = await search.member_history(pool, member, search.Filters(), before, 7)
        seen += [(t["business_date"], t["id"]) for t in page["transactions"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == expected
    card = await pool.fetchval("SELECT id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(pool, PAN1))
    one = await search.member_history(pool, member, search.Filters(card_id=card, channel="terminal"), None, 100)
    assert one["count"] == 15 and {t["pan"] for t in one["transactions"]} == {MASKED1}
    assert {t["channel"] for t in one["transactions"]} == {"terminal"}
    await pool.execute("UPDATE loyalty.transactions SET txn_type = 'inquiry' WHERE idempotency_key = 'h-4'")
    shown = await search.member_history(pool, member, search.Filters(card_id=card), None, 100, ("inquiry", "marker"))
    assert shown["count"] == 14 and "inquiry" not in {t["txn_type"] for t in shown["transactions"]}
    stranger = await pool.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(pool, PAN2))
    assert (await search.member_history(pool, stranger, search.Filters(card_id=card), None, 100))["count"] == 0

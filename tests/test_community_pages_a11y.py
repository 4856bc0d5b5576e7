"""Every community page, in English and Chinese: one heading, a label for every control, header
cells in every table."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import httpx
from portal_support import (
    PortalEnv,
    logged_in,
    member_logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
)

from ledger.loyalty import card_numbers, demo
from ledger.loyalty.members import enrol
from portal import feedback, mail, promotions


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


async def _check(client: httpx.AsyncClient, path: str) -> None:
    for lang in ("en", "zh_CN"):
        response = await client.get(f"{path}{'&' if '?' in path else '?'}lang={lang}")
        assert response.status_code == 200, (path, lang)
        parsed = Controls()
        parsed.feed(response.text)
        assert parsed.h1 == 1, path
        assert set(parsed.ids) <= parsed.labels, (path, set(parsed.ids) - parsed.labels)
        assert parsed.th >= parsed.tables, path


async def test_every_community_page_is_labelled(portal_env: PortalEnv) -> None:
    card_id, member_id = await portal_env.pool.fetchrow("SELECT id, member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(portal_env.pool, demo.demo_pan(1)))
    await enrol(portal_env.pool, card_id, "ALLY")
    now = dt.datetime.now(dt.UTC)
    async with portal_env.pool.acquire() as conn:
        promo = await promotions.create(conn, "M0001", promotions.Draft("Sale", "Text", now, now + dt.timedelta(days=1)),
                                        "test")
        mine = await feedback.create_merchant_feedback(conn, "M0001", "Question", "Why?", "test")
        theirs = await feedback.create_member_feedback(conn, member_id, "M0001", "Points", "Where?")
        note = await mail.send_to_merchants(conn, "M0001", "Hello", "Welcome.", "test")
        letter = await mail.send_to_members(conn, "M0001", member_id, "Hi", "Welcome.", "test")
    assert letter is not None
    await promotions.publish(portal_env.pool, None, promo["id"], 0, "test")
    merchant = await logged_in(portal_env, "m0001-admin")
    for path in ("/promotions", "/promotions/new", f"/promotions/{promo['id']}", f"/promotions/{promo['id']}/edit",
                 "/feedback", "/feedback/new", f"/feedback/{mine['id']}", f"/feedback/{theirs['id']}", "/mail",
                 f"/mail/{note['id']}", "/mail/sent", "/mail/new"):
        await _check(merchant, path)
    platform = await logged_in(portal_env, "admin")
    for path in ("/promotions?status=approved", f"/promotions/{promo['id']}", "/feedback", "/mail/sent", "/mail/new"):
        await _check(platform, path)
    await _check(portal_env.client(), "/m/M0001")
    member = await member_logged_in(portal_env, "13800000001")
    for path in ("/member/promotions", "/member/mail", f"/member/mail/{letter['id']}", "/member/feedback",
                 "/member/feedback/new", f"/member/feedback/{theirs['id']}"):
        await _check(member, path)

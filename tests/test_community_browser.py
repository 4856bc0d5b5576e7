"""Promotions and mail in a real browser (Debian's chromium driven by Playwright), in English
and in Chinese: a merchant's admin writes a promotion, the platform's operator approves it
from the approval queue, and it appears on the merchant's public page and on the member's
pages; the merchant writes to the member, and the message is in the member's inbox.

The portal is served as in tests/test_portal_browser_flow.py (uvicorn in a thread, a free
port). Labels are looked up in the portal's own catalogs, so the Chinese run follows the
Chinese pages. Skipped, loudly, when chromium or Playwright is missing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_portal_browser import CHROMIUM_ARGS
from test_portal_browser_flow import _book_problems, _seed, _ServedPortal, chromium  # noqa: F401

from ledger import db as ledger_db
from ledger.loyalty import card_numbers
from ledger.loyalty import demo as ledger_demo
from ledger.loyalty.members import enrol
from portal import demo as portal_demo
from portal import i18n

if TYPE_CHECKING:
    from playwright.sync_api import Page

ACTION_TIMEOUT_MS = 15_000
MEMBER_PHONE = portal_demo.DEMO_MEMBERS[0].phone  # demo card 1's member, who logs in with it


class Words:
    """The pages' words in one language, from the catalogs."""

    def __init__(self, lang: str) -> None:
        i18n.load_catalogs()
        self.lang = lang

    def __call__(self, message: str, **params: Any) -> str:
        token = i18n._current.set(self.lang)
        try:
            text = i18n.gettext(message)
        finally:
            i18n._current.reset(token)
        return text % params if params else text


async def _enrol_member(dsn: str) -> int:
    """Demo card 1's member, a member of M0001's program; its id."""
    conn = await ledger_db.connect(dsn)
    try:
        card_id, member_id = await conn.fetchrow("SELECT id, member_id FROM loyalty.cards WHERE id = $1",
            await card_numbers.card_id_by_number(conn, ledger_demo.demo_pan(1)))
        await enrol(conn, card_id, "ALLY")
        return int(member_id)
    finally:
        await conn.close()


@pytest.fixture
def served(db_dsn: str) -> Iterator[tuple[str, int]]:
    """The portal over the demo data; (its URL, the id of a member of M0001's program)."""
    asyncio.run(_seed(db_dsn))
    member_id = asyncio.run(_enrol_member(db_dsn))
    portal = _ServedPortal(db_dsn)
    portal.start()
    try:
        yield portal.url, member_id
    finally:
        portal.stop()


def _expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _log_in(page: Page, w: Words, url: str, login: str) -> None:
    page.goto(f"{url}/login?lang={w.lang}")
    page.get_by_label(w("Login"), exact=True).fill(login)
    page.get_by_label(w("Password"), exact=True).fill(portal_demo.DEMO_PASSWORD)
    page.get_by_role("button", name=w("Log in")).click()
    page.get_by_role("button", name=w("Log out")).wait_for()


def _log_out(page: Page, w: Words) -> None:
    page.get_by_role("button", name=w("Log out")).click()
    _expect(page.get_by_role("heading", level=1)).to_have_text(w("Log in"))


def _nav(page: Page, w: Words, name: str) -> None:
    page.get_by_role("navigation", name=w("Main menu")).get_by_role("link", name=w(name)).first.click()


def _merchant_writes_a_promotion(page: Page, w: Words, url: str, title: str, member_id: int) -> None:
    _log_in(page, w, url, "m0001-admin")
    _nav(page, w, "Promotions")
    page.get_by_role("link", name=w("New promotion")).click()
    page.get_by_label(w("Title"), exact=True).fill(title)
    page.get_by_label(w("Text"), exact=True).fill(f"{title}: two for one, all week.")
    page.get_by_label(w("Shown to")).select_option("program")
    page.get_by_role("button", name=w("Submit")).click()
    _expect(page.get_by_role("heading", level=1)).to_have_text(title)
    assert page.get_by_text(w("Waiting for approval"), exact=True).count() == 1
    # Mail to the member, by member number.
    _nav(page, w, "Sent mail")
    page.get_by_role("link", name=w("New message")).click()
    page.get_by_label(w("To member (number, or * for every member of our program)")).fill(str(member_id))
    page.get_by_label(w("Subject"), exact=True).fill(f"{title}: for you")
    page.get_by_label(w("Message"), exact=True).fill("Come and see.")
    page.get_by_role("button", name=w("Send")).click()
    _expect(page.get_by_role("heading", level=1)).to_have_text(w("Sent mail"))
    assert page.get_by_role("cell", name=f"{title}: for you").count() == 1
    _log_out(page, w)


def _platform_approves(page: Page, w: Words, url: str, title: str) -> None:
    page.goto(f"{url}/m/M0001?lang={w.lang}")
    assert page.get_by_text(title).count() == 0  # not before approval
    _log_in(page, w, url, "operator")
    _nav(page, w, "Promotions")
    page.get_by_role("link", name=title).click()
    page.get_by_label(w("Note to the merchant (optional)")).fill("OK")
    page.get_by_role("button", name=w("Approve")).click()
    _expect(page.get_by_role("heading", level=1)).to_have_text(title)
    assert page.get_by_text(w("Approved"), exact=True).count() == 1
    _log_out(page, w)


def _public_page_shows_it(page: Page, w: Words, url: str, title: str) -> None:
    page.goto(f"{url}/m/M0001?lang={w.lang}")
    _expect(page.get_by_role("heading", level=1)).to_have_text("Alliance Books")
    _expect(page.get_by_role("heading", name=title)).to_have_count(1)
    assert page.get_by_text(f"{title}: two for one, all week.").count() == 1


def _member_sees_both(page: Page, w: Words, url: str, title: str) -> None:
    page.goto(f"{url}/member/login?lang={w.lang}")
    page.get_by_label(w("Card number or phone")).fill(MEMBER_PHONE)
    page.get_by_label(w("Password"), exact=True).fill(portal_demo.DEMO_PASSWORD)
    page.get_by_role("button", name=w("Log in")).click()
    menu = page.get_by_role("navigation", name=w("Main menu"))
    menu.get_by_role("link", name=w("Promotions")).click()
    _expect(page.get_by_role("heading", name=title)).to_have_count(1)
    assert page.get_by_text(f"{title}: two for one, all week.").count() == 1
    mailbox = menu.get_by_role("link", name=w("Mailbox"))
    _expect(mailbox).to_contain_text("(1)")  # the unread count in the menu
    mailbox.click()
    page.get_by_role("link", name=f"{title}: for you").click()
    _expect(page.get_by_role("heading", level=1)).to_have_text(f"{title}: for you")
    assert page.get_by_text("Come and see.").count() == 1
    assert page.get_by_role("navigation", name=w("Main menu")).locator(".unread").count() == 0  # read now
    page.get_by_role("button", name=w("Log out")).click()
    _expect(page.get_by_role("heading", level=1)).to_have_text(w("Member login"))


STEPS: tuple[tuple[str, Callable[[Page, Words, str, str, int], None]], ...] = (
    ("1-merchant", lambda p, w, u, t, m: _merchant_writes_a_promotion(p, w, u, t, m)),
    ("2-platform", lambda p, w, u, t, m: _platform_approves(p, w, u, t)),
    ("3-public", lambda p, w, u, t, m: _public_page_shows_it(p, w, u, t)),
    ("4-member", lambda p, w, u, t, m: _member_sees_both(p, w, u, t)),
)


def test_promotion_and_mail_reach_the_member_in_english_and_chinese(chromium: str,  # noqa: F811
                                                                     served: tuple[str, int], db_dsn: str,
                                                                     tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, member_id = served
    artifacts = Path(os.environ.get("SWITCHD_ARTIFACTS") or tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for lang, title in (("en", "Spring fair"), ("zh_CN", "春季书展")):
                w = Words(lang)
                page = browser.new_page(locale="zh-CN" if lang == "zh_CN" else "en-US")
                page.set_default_timeout(ACTION_TIMEOUT_MS)
                for name, step in STEPS:
                    try:
                        step(page, w, url, title, member_id)
                    except Exception:
                        artifacts.mkdir(parents=True, exist_ok=True)
                        shot = artifacts / f"community-browser-{lang}-{name}.png"
                        page.screenshot(path=str(shot), full_page=True)
                        print(f"screenshot of the failed step {lang} {name}: {shot} (page {page.url})",
                              file=sys.stderr)
                        raise
                page.close()
        finally:
            browser.close()
    assert asyncio.run(_book_problems(db_dsn)) == [], "the books do not balance after the community browser test"

"""The points mall in a real browser (Debian's chromium driven by Playwright), in English and in Chinese.

A member logs in (made to change the password first), finds a good in the points mall and orders
it with points; the merchant's operator confirms the order, ships it and completes it; the member
sees the order completed and the points balance lowered by its price. Everything through the
pages (labels, roles and names, in the page's language). The books balance afterwards.

The portal under uvicorn in a thread, as in tests/test_portal_browser_flow.py (whose server and
chromium fixture this uses); skipped, loudly, when chromium or Playwright is missing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from ledger_support import ledger_settings
from test_portal_browser_flow import (  # noqa: F401  (chromium: the fixture, by name)
    ACTION_TIMEOUT_MS,
    CHROMIUM_ARGS,
    _book_problems,
    _ServedPortal,
    chromium,
)

from ledger import db as ledger_db
from ledger.engine import Ledger
from ledger.loyalty import card_numbers, mall, seat
from ledger.loyalty import demo as ledger_demo
from ledger.loyalty.operations import Loyalty
from portal import demo as portal_demo
from portal import i18n, images, member_auth

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

PAN = ledger_demo.demo_pan(1)
FIRST_PASSWORD = "Given-at-the-desk-1"
OWN_PASSWORD = "my own mall secret 42"
GOOD, PRICE_POINTS, FUNDED_POINTS = "Tea set", 300, 1_000
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


async def _seed(dsn: str) -> None:
    pool = await ledger_db.create_pool(dsn, 1, 4)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await ledger_demo.seed(conn, cards=2)
            await portal_demo.seed_users(conn)
            member_id = await conn.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1",
                await card_numbers.card_id_by_number(conn, PAN))
            await member_auth.set_password(conn, member_id, FIRST_PASSWORD, by_self=False)
            image_id = await images.store(conn, PNG, "tea.png")
            await mall.add_good(conn, "M0001", mall.GoodForm(GOOD, "Six cups and a pot", PRICE_POINTS, None, 3),
                                image_id)
        async with Ledger(pool, ledger_settings()) as ledger:
            topup = await seat.take(Loyalty(ledger), "M0001", "desk", seat.new_request_id(), "topup", PAN,
                                    FUNDED_POINTS)
            assert topup.approved, topup
    finally:
        await pool.close()


@pytest.fixture
def mall_url(db_dsn: str) -> Iterator[str]:
    """The portal over the demo database with a good on offer and a member with points."""
    asyncio.run(_seed(db_dsn))
    served = _ServedPortal(db_dsn)
    served.start()
    try:
        yield served.url
    finally:
        served.stop()


class _Words:
    """The portal's own words in one language (its catalogs), so the test reads what a user reads."""

    def __init__(self, locale: str) -> None:
        i18n.load_catalogs()
        self.catalog = i18n._catalogs[locale]

    def __call__(self, message: str, **values: object) -> str:
        return self.catalog.gettext(message) % values if values else self.catalog.gettext(message)


def _expect(locator: Locator):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _h1(page: Page) -> Locator:
    return page.get_by_role("heading", level=1)


def _value_of(page: Page, term: str) -> str:
    dt = page.get_by_role("term").filter(has_text=term).first
    return dt.locator("xpath=following-sibling::dd[1]").inner_text().strip()


def _points_available(page: Page, t: _Words) -> str:
    page.get_by_role("navigation", name=t("Main menu")).get_by_role("link", name=t("My account"), exact=True).click()
    row = page.get_by_role("row").filter(has_text="ALLY")
    return row.get_by_role("cell").nth(3).inner_text().replace("ALLY", "").replace(",", "").strip()


def _member_orders_with_points(page: Page, url: str, t: _Words) -> str:
    page.goto(f"{url}/member/login")
    page.get_by_label(t("Card number or phone")).fill(PAN)
    page.get_by_label(t("Password"), exact=True).fill(FIRST_PASSWORD)
    page.get_by_role("button", name=t("Log in")).click()
    _expect(_h1(page)).to_have_text(t("Change password"))
    page.get_by_label(t("Current password")).fill(FIRST_PASSWORD)
    page.get_by_label(t("New password"), exact=True).fill(OWN_PASSWORD)
    page.get_by_label(t("New password again")).fill(OWN_PASSWORD)
    page.get_by_role("button", name=t("Change password")).click()
    page.get_by_role("status").wait_for()
    assert _points_available(page, t) == f"{FUNDED_POINTS:,}".replace(",", "")
    menu = page.get_by_role("navigation", name=t("Main menu"))
    menu.get_by_role("link", name=t("Points mall"), exact=True).click()
    _expect(_h1(page)).to_have_text(t("Points mall"))
    page.get_by_role("link", name=GOOD).click()
    _expect(_h1(page)).to_have_text(GOOD)
    assert page.get_by_role("img", name=GOOD).count() == 1
    page.get_by_label(t("Quantity")).fill("1")
    page.get_by_label(t("Pay with")).select_option("points")
    page.get_by_role("button", name=t("Place the order")).click()
    _expect(page.locator("#order-status")).to_have_text(t("Placed"))
    order_heading = _h1(page).inner_text().strip()
    assert PAN not in page.content()
    return order_heading


def _merchant_confirms_ships_completes(page: Page, url: str, t: _Words, order_heading: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label(t("Login"), exact=True).fill("m0001-operator")
    page.get_by_label(t("Password"), exact=True).fill(portal_demo.DEMO_PASSWORD)
    page.get_by_role("button", name=t("Log in")).click()
    page.get_by_role("navigation", name=t("Main menu")).get_by_role("link", name=t("Mall"), exact=True).click()
    _expect(_h1(page)).to_have_text(t("Mall orders"))
    order_id = order_heading.split()[-1]
    page.get_by_role("link", name=order_id, exact=True).click()
    _expect(_h1(page)).to_have_text(order_heading)
    for button, status in (("Confirm", "Confirmed"), ("Mark shipped", "Shipped"), ("Mark completed", "Completed")):
        page.get_by_role("button", name=t(button)).click()
        _expect(page.locator("dd.status")).to_have_text(t(status))
    assert _value_of(page, t("RRN")).startswith("9")


def _member_sees_it_completed(page: Page, t: _Words, order_heading: str) -> None:
    page.get_by_role("navigation", name=t("Main menu")).get_by_role("link", name=t("My orders"), exact=True).click()
    _expect(_h1(page)).to_have_text(t("My orders"))
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=order_heading.split()[-1], exact=True))
    _expect(row.locator("td.status")).to_have_text(t("Completed"))
    row.get_by_role("link").click()
    _expect(page.locator("#order-status")).to_have_text(t("Completed"))
    assert _points_available(page, t) == str(FUNDED_POINTS - PRICE_POINTS)


@pytest.mark.parametrize(("locale", "browser_locale"), [("en", "en-US"), ("zh_CN", "zh-CN")])
def test_member_orders_merchant_delivers_member_sees_it(chromium: str, mall_url: str, db_dsn: str,  # noqa: F811
                                                        tmp_path: Path, locale: str, browser_locale: str) -> None:
    from playwright.sync_api import sync_playwright

    t = _Words(locale)
    artifacts = Path(os.environ.get("SWITCHD_ARTIFACTS") or tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        member = browser.new_context(locale=browser_locale).new_page()
        merchant = browser.new_context(locale=browser_locale).new_page()
        for page in (member, merchant):
            page.set_default_timeout(ACTION_TIMEOUT_MS)
        step = "member-orders"
        try:
            heading = _member_orders_with_points(member, mall_url, t)
            step = "merchant-delivers"
            _merchant_confirms_ships_completes(merchant, mall_url, t, heading)
            step = "member-sees-it"
            member.reload()
            _member_sees_it_completed(member, t, heading)
        except Exception:
            artifacts.mkdir(parents=True, exist_ok=True)
            for who, page in (("member", member), ("merchant", merchant)):
                shot = artifacts / f"mall-browser-{locale}-{step}-{who}.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failed step {step}: {shot} (page {page.url})", file=sys.stderr)
            raise
        finally:
            browser.close()
    assert asyncio.run(_book_problems(db_dsn)) == [], "the books do not balance after the mall's browser flow"

"""A member online, in a real browser (Debian's chromium driven by Playwright), in Chinese and English.

A merchant's admin issues a card to a new member with a first password and takes a purchase on
it at the web trading seat; the member, in a browser that asks for Chinese, logs in with the
phone, is made to change the password first, sees the points on the home page, the balances and
the purchase in the history (channel: web seat); then switches to English and sees the same
pages in English, and filters the history by channel. The books balance afterwards.

The portal and the browser's set-up are those of tests/test_portal_browser_flow.py (uvicorn in
a thread over a demo database; skipped, loudly, without chromium or Playwright; a failed step
leaves a screenshot).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from test_portal_browser import CHROMIUM_ARGS
from test_portal_browser_flow import (
    ACTION_TIMEOUT_MS,
    _book_problems,
    _expect,
    _expect_h1,
    _log_in,
    _log_out,
    _nav,
    _value_of,
)

# The browser flow's fixtures, under names of their own here (pytest registers them by these names).
from test_portal_browser_flow import chromium as chromium_path  # noqa: F401
from test_portal_browser_flow import portal_url as served_portal_url  # noqa: F401

from ledger.loyalty import demo as ledger_demo
from ledger.loyalty.rules import luhn_complete
from portal import demo as portal_demo

if TYPE_CHECKING:
    from playwright.sync_api import Page

PAN = luhn_complete(f"{ledger_demo.DEMO_BIN}888000001")
MASKED_PAN = f"{PAN[:6]}******{PAN[-4:]}"
PHONE = "13912345678"
FIRST_PASSWORD = "first-pass-4321"
OWN_PASSWORD = "lotus-river-8086"


def _merchant_issues_and_sells(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    _log_in(page, "m0001-admin", portal_demo.DEMO_PASSWORD)
    _nav(page, "Members")
    page.get_by_role("link", name="Issue a card").click()
    page.get_by_label("Or the card number of a card in hand").fill(PAN)
    page.get_by_label("A new member").check()
    page.get_by_label("Name", exact=True).fill("Browser Member")
    page.get_by_label("Phone (the member logs in with it)").fill(PHONE)
    page.get_by_label("A first password I type (the member must change it at first login)").check()
    page.get_by_label("First password", exact=True).fill(FIRST_PASSWORD)
    page.get_by_role("button", name="Issue").click()
    _expect_h1(page, f"Member {MASKED_PAN}")
    assert _value_of(page, "Online login") == "Must change the password at the next login"
    assert PAN not in page.content() and FIRST_PASSWORD not in page.content()

    _nav(page, "Trading seat")
    page.get_by_label("Transaction").select_option(label="Purchase (earn points)")
    page.get_by_label("Card number").fill(PAN)
    page.get_by_label(re.compile(r"^Amount \(")).fill("25.00")
    page.get_by_role("button", name="Send").click()
    _expect_h1(page, "Receipt")
    _expect(page.get_by_role("status")).to_have_text("Approved.")
    _log_out(page)


def _member_in_chinese(page: Page, url: str) -> None:
    page.goto(f"{url}/member/login")
    _expect_h1(page, "会员登录")
    page.get_by_label("卡号或手机号").fill(PHONE)
    page.get_by_label("密码", exact=True).fill(FIRST_PASSWORD)
    page.get_by_role("button", name="登录").click()
    _expect_h1(page, "修改密码")
    assert page.get_by_role("navigation", name="主菜单").count() == 0  # nothing else until it is changed
    page.get_by_label("当前密码").fill(FIRST_PASSWORD)
    page.get_by_label("新密码", exact=True).fill(OWN_PASSWORD)
    page.get_by_label("再次输入新密码").fill(OWN_PASSWORD)
    page.get_by_role("button", name="修改密码").click()
    page.get_by_role("status").filter(has_text="您的密码已修改。").wait_for()
    _expect_h1(page, "欢迎，Browser Member")
    assert page.get_by_role("cell", name=MASKED_PAN).count() >= 1

    menu = page.get_by_role("navigation", name="主菜单")
    menu.get_by_role("link", name="余额", exact=True).click()
    _expect_h1(page, "我的余额")
    points = page.get_by_role("row").filter(has=page.get_by_role("cell", name="积分", exact=True))
    _expect(points).to_have_count(1)
    assert points.get_by_role("cell").nth(4).inner_text().strip() == "25"  # 25.00 at one point per unit

    menu.get_by_role("link", name="交易", exact=True).click()
    _expect_h1(page, "我的交易")
    rows = page.get_by_role("table").get_by_role("row").filter(has=page.get_by_role("cell", name="网上交易台"))
    _expect(rows).to_have_count(1)
    assert PAN not in page.content()


def _member_in_english(page: Page, _url: str) -> None:
    page.get_by_role("navigation", name="语言").get_by_role("link", name="English").click()
    _expect_h1(page, "My transactions")
    page.get_by_label("Channel").select_option(label="Web seat")
    page.get_by_role("button", name="Show").click()
    _expect(page.get_by_role("row").filter(has=page.get_by_role("cell", name="Web seat"))).to_have_count(1)
    page.get_by_label("Channel").select_option(label="Terminal")
    page.get_by_role("button", name="Show").click()
    _expect(page.get_by_role("cell", name="No transactions.")).to_have_count(1)
    _nav(page, "My cards")
    _expect_h1(page, "My cards")
    _expect(page.get_by_role("button", name=f"Block card {MASKED_PAN}")).to_have_count(1)
    _nav(page, "Points rates")
    _expect_h1(page, "Points rates")
    _expect(page.get_by_role("cell", name="ALLY", exact=True)).to_have_count(1)
    page.get_by_role("button", name="Log out").click()
    _expect_h1(page, "Member login")


STEPS: tuple[tuple[str, str, Callable[[Page, str], None]], ...] = (
    ("1-merchant", "en-US", _merchant_issues_and_sells),
    ("2-member-zh", "zh-CN", _member_in_chinese),
    ("3-member-en", "", _member_in_english),  # the same page, switched to English
)


def test_member_first_login_balances_and_history_in_chinese_and_english(
        chromium_path: str, served_portal_url: str, db_dsn: str, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("SWITCHD_ARTIFACTS") or tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = None
            for name, locale, step in STEPS:
                if locale:  # a browser of its own (cookies, language) for the merchant and the member
                    page = browser.new_page(locale=locale)
                    page.set_default_timeout(ACTION_TIMEOUT_MS)
                assert page is not None
                try:
                    step(page, served_portal_url)
                except Exception:
                    artifacts.mkdir(parents=True, exist_ok=True)
                    shot = artifacts / f"member-browser-{name}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failed step {name}: {shot} (page {page.url})", file=sys.stderr)
                    raise
        finally:
            browser.close()
    assert asyncio.run(_book_problems(db_dsn)) == [], "the books do not balance after the member browser flow"

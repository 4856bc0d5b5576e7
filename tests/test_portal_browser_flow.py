"""The portal's main flow in a real browser: Debian's chromium driven by Playwright.

One scenario, through the pages only (clicks and typing, found by labels, roles and names):
the platform admin adds a merchant of the alliance program, its admin and a terminal; that
admin (made to change the password first) adds a cashier and issues a member's card; the
cashier (made to change the password too) takes a purchase and a redemption at the web trading
seat, sees the member's balances and both transactions in the search, refunds part of the
purchase from its page, sees a chart on the statistics page and switches to Chinese. The books
balance afterwards.

The portal is the ASGI application served by uvicorn (with uvloop) on a free port, in a
thread, with the ledger's settings (the seat needs its posting engine) and a master key (the
terminal's MAC key is drawn and sealed). Skipped, loudly, when chromium or Playwright is
missing; a failure keeps a screenshot named after the step (in ``$SWITCHD_ARTIFACTS`` when
set, else the test's temporary directory) and prints its path.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
import uvloop
from ledger_support import ledger_settings
from portal_support import MASTER_KEY, SECRET
from test_portal_browser import CHROMIUM_ARGS, _skip_loudly

from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.loyalty import demo as ledger_demo
from ledger.loyalty.rules import luhn_complete
from portal import demo as portal_demo
from portal.app import create_app
from portal.server import listen_socket
from portal.settings import PortalSettings

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

START_WAIT_S = 30
STOP_WAIT_S = 20
ACTION_TIMEOUT_MS = 15_000  # the machine is shared: generous, but a stuck page still fails fast

MERCHANT_ID, MERCHANT_NAME = "M0777", "Browser Bistro"
TERMINAL_ID = "T0000777"
ADMIN_LOGIN, CASHIER_LOGIN = "bistro-admin", "bistro-cashier"
TEMPORARY_PASSWORD = "temporary-pass-1"
PAN = luhn_complete(f"{ledger_demo.DEMO_BIN}777000001")  # typed in as "a card in hand"
MASKED_PAN = f"{PAN[:6]}******{PAN[-4:]}"


# ---------------------------------------------------------------------- the portal


async def _seed(dsn: str) -> None:
    conn = await ledger_db.connect(dsn)
    try:
        async with conn.transaction():
            await ledger_demo.seed(conn, cards=2)
            await portal_demo.seed_users(conn)
    finally:
        await conn.close()


async def _book_problems(dsn: str) -> list[Any]:
    conn = await ledger_db.connect(dsn)
    try:
        return list(await check_books(conn))
    finally:
        await conn.close()


class _ServedPortal:
    """The portal app under uvicorn in a thread of its own (its own event loop and pool)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.sock = listen_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="portal-under-test", daemon=True)

    def _run(self) -> None:
        try:
            uvloop.run(self._serve())
        except BaseException as exc:  # reported by start()/stop() in the test's thread
            self.failure = exc

    async def _serve(self) -> None:
        pool = await ledger_db.create_pool(self.dsn, 1, 6)
        try:
            app = create_app(PortalSettings(secret=SECRET), pool, ledger_settings(), MASTER_KEY)
            config = uvicorn.Config(app, http="h11", lifespan="on", log_config=None, access_log=False)
            self.server = uvicorn.Server(config)
            await self.server.serve(sockets=[self.sock])
        finally:
            await pool.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_WAIT_S
        while not (self.server is not None and self.server.started):
            if self.failure is not None or not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"portal did not start: {self.failure!r}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(STOP_WAIT_S)
        self.sock.close()
        assert not self.thread.is_alive(), "portal did not stop"
        assert self.failure is None, f"portal failed: {self.failure!r}"


@pytest.fixture
def portal_url(db_dsn: str) -> Iterator[str]:
    """The portal over a demo database (demo data, demo users), with the seat and a master key."""
    asyncio.run(_seed(db_dsn))
    served = _ServedPortal(db_dsn)
    served.start()
    try:
        yield served.url
    finally:
        served.stop()


# ---------------------------------------------------------------------- page helpers


def _nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main menu").get_by_role("link", name=name, exact=True).click()


def _h1(page: Page) -> Locator:
    return page.get_by_role("heading", level=1)


def _expect(locator: Locator) -> Any:
    """Playwright's auto-retrying assertions (imported late: Playwright may be missing)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _expect_h1(page: Page, text: str) -> None:
    _expect(_h1(page)).to_have_text(text)


def _value_of(page: Page, term: str) -> str:
    """The text of the ``<dd>`` that follows the ``<dt>`` named ``term``."""
    dt = page.get_by_role("term").filter(has_text=term).first
    return dt.locator("xpath=following-sibling::dd[1]").inner_text().strip()


def _log_in(page: Page, login: str, password: str) -> None:
    page.get_by_label("Login", exact=True).fill(login)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def _log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    _expect_h1(page, "Log in")


def _first_login(page: Page, login: str, new_password: str) -> None:
    """A user whose password someone else set: log in, then the forced change before anything else."""
    _log_in(page, login, TEMPORARY_PASSWORD)
    _expect_h1(page, "Change password")
    assert page.get_by_role("navigation", name="Main menu").count() == 0  # nothing else until it is changed
    page.get_by_label("Current password").fill(TEMPORARY_PASSWORD)
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("New password again").fill(new_password)
    page.get_by_label("New password again").press("Enter")
    page.get_by_role("status").filter(has_text="Your password has been changed.").wait_for()


def _add_operator(page: Page, login: str, name: str, role_label: str, merchant_id: str | None) -> None:
    _nav(page, "Operators")
    page.get_by_role("link", name="Add an operator").click()
    page.get_by_label("Login", exact=True).fill(login)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Role", exact=True).select_option(label=role_label)
    if merchant_id is not None:
        page.get_by_label("Merchant id (for a merchant's user)").fill(merchant_id)
    page.get_by_label("Temporary password (to be changed at first login)").fill(TEMPORARY_PASSWORD)
    page.get_by_role("button", name="Add").click()
    _expect_h1(page, f"Operator {login}")


def _take_at_seat(page: Page, kind_label: str, amount: str) -> dict[str, str]:
    """One seat transaction through its form; the receipt's figures by name."""
    _nav(page, "Trading seat")
    _expect_h1(page, "Trading seat")
    page.get_by_label("Transaction").select_option(label=kind_label)
    page.get_by_label("Card number").fill(PAN)
    page.get_by_label(re.compile(r"^Amount \(")).fill(amount)
    page.get_by_role("button", name="Send").click()
    _expect_h1(page, "Receipt")
    _expect(page.get_by_role("status")).to_have_text("Approved.")
    return {term: _value_of(page, term) for term in ("Card", "RRN", "Points earned", "Points redeemed",
                                                      "Points balance after")}


def _points_balance(page: Page) -> str:
    """The member's points balance in the alliance program, from the member's page."""
    _nav(page, "Members")
    page.get_by_label("Card number").fill(PAN)
    page.get_by_role("button", name="Find the card").click()
    _expect_h1(page, f"Member {MASKED_PAN}")
    balances = page.get_by_role("table", name="Balances")
    row = balances.get_by_role("row").filter(has=page.get_by_role("cell", name="Points", exact=True))
    return row.get_by_role("cell").nth(2).inner_text().strip()


# ---------------------------------------------------------------------- the scenario's steps


def _platform_admin_sets_up_the_merchant(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    _log_in(page, "admin", portal_demo.DEMO_PASSWORD)
    _h1(page).filter(has_text="Welcome").wait_for()
    _nav(page, "Merchants")
    page.get_by_role("link", name="Add a merchant").click()
    page.get_by_label("Merchant id").fill(MERCHANT_ID)
    page.get_by_label("Program").select_option("ALLY")
    page.get_by_label("Name", exact=True).fill(MERCHANT_NAME)
    page.get_by_label("Earn rate (points per currency unit)").fill("2")
    page.get_by_label("Fees in basis points (N, or TYPE=N)").fill("25")
    page.get_by_role("button", name="Save").click()
    _expect_h1(page, f"Merchant {MERCHANT_ID}")

    _add_operator(page, ADMIN_LOGIN, "Bistro Admin", "Merchant administrator", MERCHANT_ID)

    _nav(page, "Terminals")
    page.get_by_role("link", name="Add a terminal").click()
    page.get_by_label("Terminal id").fill(TERMINAL_ID)
    page.get_by_label("Merchant id").fill(MERCHANT_ID)
    page.get_by_label("MAC key", exact=True).select_option("generate")
    page.get_by_role("button", name="Save").click()
    _expect_h1(page, f"The new MAC key of {TERMINAL_ID}")
    assert len(_value_of(page, "Key check value")) >= 6
    page.get_by_role("link", name="Done").click()
    _expect_h1(page, f"Terminal {TERMINAL_ID}")
    assert _value_of(page, "Merchant") == MERCHANT_ID
    _log_out(page)


def _merchant_admin_adds_a_cashier_and_a_member(page: Page, _url: str) -> None:
    _first_login(page, ADMIN_LOGIN, "kiwi-orchard-2047")
    _add_operator(page, CASHIER_LOGIN, "Bistro Cashier", "Merchant operator", None)
    assert _value_of(page, "Merchant") == MERCHANT_ID
    _nav(page, "Members")
    page.get_by_role("link", name="Issue a card").click()
    page.get_by_label("Or the card number of a card in hand").fill(PAN)
    page.get_by_label("Name", exact=True).fill("Browser Member")
    page.get_by_role("button", name="Issue").click()
    # The member's activation code (the form's default first credential), shown this once.
    _expect_h1(page, f"Activation code for card {MASKED_PAN}")
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", _value_of(page, "Activation code"))
    page.get_by_role("link", name="Done").click()
    _expect_h1(page, f"Member {MASKED_PAN}")
    assert PAN not in page.content()  # masked everywhere, the page's source too
    _log_out(page)


def _search_by_card(page: Page) -> Locator:
    """The transaction search for the member's card (typed in, sent in the POST body); the results."""
    _nav(page, "Transactions")
    page.get_by_label("Card number").fill(PAN)
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("table").filter(has_text="on this page")
    results.wait_for()
    assert PAN not in page.content()
    return results


def _cashier_trades_and_refunds(page: Page, _url: str) -> None:
    _first_login(page, CASHIER_LOGIN, "maple-harbour-3158")
    # 50.00 at the merchant's 2 points per currency unit; then 30 of those points redeemed.
    earn = _take_at_seat(page, "Purchase (earn points)", "50.00")
    assert (earn["Card"], earn["Points earned"], earn["Points balance after"]) == (MASKED_PAN, "100", "100"), earn
    redeem = _take_at_seat(page, "Redeem points", "30")
    assert (redeem["Points redeemed"], redeem["Points balance after"]) == ("30", "70"), redeem
    assert _points_balance(page) == "70"

    results = _search_by_card(page)
    for rrn in (earn["RRN"], redeem["RRN"]):
        _expect(results.get_by_role("row").filter(has=page.get_by_role("link", name=rrn, exact=True))).to_have_count(1)
    results.get_by_role("link", name=earn["RRN"], exact=True).click()
    _expect_h1(page, f"Transaction {earn['RRN']}")
    page.get_by_label("Refund amount (money as 12.34, points as a whole number)").fill("10.00")
    page.get_by_role("button", name="Refund").click()
    _expect_h1(page, "Receipt")
    _expect(page.get_by_role("status")).to_have_text("Approved.")
    refund_rrn = _value_of(page, "RRN")
    # A fifth of the purchase refunded: a fifth of its points go back.
    assert _points_balance(page) == "50"

    results = _search_by_card(page)
    _expect(results.get_by_role("row").filter(has=page.get_by_role("link", name=refund_rrn, exact=True))) \
        .to_have_count(1)
    results.get_by_role("link", name=earn["RRN"], exact=True).click()
    _expect_h1(page, f"Transaction {earn['RRN']}")
    done_against = page.get_by_role("table", name="Done against it")
    _expect(done_against.get_by_role("link", name=refund_rrn, exact=True)).to_have_count(1)


def _statistics_show_a_chart(page: Page, _url: str) -> None:
    _nav(page, "Statistics")
    _expect_h1(page, "Statistics")
    chart = page.get_by_role("img", name="Approved transactions per period")
    chart.wait_for()
    assert chart.evaluate("e => e.tagName.toLowerCase()") == "svg"
    assert chart.locator("rect").count() >= 1


def _switch_to_chinese(page: Page, _url: str) -> None:
    page.get_by_role("navigation", name="Language").get_by_role("link", name="中文").click()
    _expect_h1(page, "统计")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    menu = page.get_by_role("navigation", name="主菜单")
    assert menu.get_by_role("link", name="会员", exact=True).count() == 1
    assert page.get_by_role("img", name="每期已批准交易").locator("rect").count() >= 1
    assert page.get_by_role("button", name="退出").count() == 1


# The scenario, in order (each step starts where the previous one left the browser); a name per screenshot.
STEPS: tuple[tuple[str, Callable[[Page, str], None]], ...] = (
    ("1-platform-admin", _platform_admin_sets_up_the_merchant),
    ("2-merchant-admin", _merchant_admin_adds_a_cashier_and_a_member),
    ("3-cashier", _cashier_trades_and_refunds),
    ("4-statistics", _statistics_show_a_chart),
    ("5-chinese", _switch_to_chinese),
)


@pytest.fixture
def chromium() -> str:
    """Debian's chromium, with Playwright to drive it; else the test is skipped, loudly (before any set-up)."""
    path = shutil.which("chromium")
    if path is None:
        _skip_loudly("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_loudly("Playwright for Python is not installed (pip install -e '.[test]')")
    assert path is not None
    return path


def test_merchant_set_up_trade_refund_chart_and_chinese(chromium: str, portal_url: str, db_dsn: str,
                                                        tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("SWITCHD_ARTIFACTS") or tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="en-US")
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        try:
            for name, step in STEPS:
                try:
                    step(page, portal_url)
                except Exception:
                    artifacts.mkdir(parents=True, exist_ok=True)
                    shot = artifacts / f"portal-browser-flow-{name}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failed step {name}: {shot} (page {page.url})", file=sys.stderr)
                    raise
        finally:
            browser.close()
    # 6. The books balance after everything the pages did.
    assert asyncio.run(_book_problems(db_dsn)) == [], "the books do not balance after the browser flow"

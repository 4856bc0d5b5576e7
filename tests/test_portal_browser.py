"""The portal in a real browser: Debian's chromium driven by Playwright, against ``python -m portal``.

As the platform admin: log in, add a merchant, find it in the list, switch to
Chinese. Skipped, loudly, when chromium or Playwright is missing; a failure keeps
a screenshot (in ``$SWITCHD_ARTIFACTS`` when set, else the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from portal_support import SECRET

from ledger import db as ledger_db
from ledger.loyalty import demo as ledger_demo
from portal.demo import DEMO_PASSWORD

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
START_WAIT_S = 30


def _skip_loudly(reason: str) -> None:
    message = f"PORTAL BROWSER TEST NOT RUN: {reason}"
    warnings.warn(message, stacklevel=2)
    print(f"\n*** {message} ***", file=sys.stderr)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(dsn: str) -> None:
    conn = await ledger_db.connect(dsn)
    try:
        async with conn.transaction():
            await ledger_demo.seed(conn, cards=2)
    finally:
        await conn.close()


@pytest.fixture
def portal_url(db_dsn: str) -> Iterator[str]:
    """``python -m portal`` serving a demo database on a free port."""
    asyncio.run(_seed(db_dsn))
    port = _free_port()
    env = {**os.environ, "SWITCHD_PORTAL_SECRET": SECRET.decode()}
    proc = subprocess.Popen([sys.executable, "-m", "portal", "--dsn", db_dsn, "--port", str(port), "--demo-users"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise AssertionError(f"portal did not start: {out[-2000:]}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_admin_adds_a_merchant_and_switches_to_chinese(portal_url: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        _skip_loudly("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_loudly("Playwright for Python is not installed (pip install -e '.[test]')")
    artifacts = Path(os.environ.get("SWITCHD_ARTIFACTS") or tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="en-US")
        try:
            page.goto(f"{portal_url}/")
            page.get_by_label("Login").fill("admin")
            page.get_by_label("Password").fill(DEMO_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("heading", level=1).filter(has_text="Welcome").wait_for()
            page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Merchants").click()
            page.get_by_role("link", name="Add a merchant").click()
            page.get_by_label("Merchant id").fill("M0777")
            page.get_by_label("Program").select_option("ALLY")
            page.get_by_label("Name", exact=True).fill("Browser Bistro")
            page.get_by_label("Earn rate (points per currency unit)").fill("2")
            page.get_by_label("Fees in basis points (N, or TYPE=N)").fill("25")
            page.get_by_role("button", name="Save").click()
            assert page.get_by_role("heading", level=1).inner_text() == "Merchant M0777"
            page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Merchants").click()
            row = page.get_by_role("row").filter(has_text="M0777")
            assert "Browser Bistro" in row.inner_text()
            page.get_by_role("link", name="中文").click()
            assert page.get_by_role("heading", level=1).inner_text() == "商户"
            assert page.get_by_role("columnheader", name="名称").count() == 1
            assert page.locator("html").get_attribute("lang") == "zh-CN"
            assert "Browser Bistro" in page.get_by_role("row").filter(has_text="M0777").inner_text()
        except Exception:
            shot = artifacts / "portal-browser-failure.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}", file=sys.stderr)
            raise
        finally:
            browser.close()

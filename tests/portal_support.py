"""Shared by the portal tests: an app over a seeded database, HTTP clients, logging in.

The demo data (ledger.loyalty.demo) plus one portal user per role (portal.demo);
the books are checked after every test that uses ``portal_env``.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import asyncpg
import httpx
import pytest
from ledger_support import ledger_settings
from starlette.applications import Starlette

from ledger.audit import check_books
from ledger.loyalty import demo as ledger_demo
from portal import demo as portal_demo
from portal.app import create_app
from portal.settings import PortalSettings

SECRET = b"portal-test-secret-0123456789abcdef"
MASTER_KEY = bytes(range(32))  # seals terminals' MAC keys in the portal tests
PASSWORD = portal_demo.DEMO_PASSWORD
# One login per role, from portal.demo.
LOGIN_OF_ROLE = {"platform_admin": "admin", "platform_operator": "operator",
                 "merchant_admin": "m0001-admin", "merchant_operator": "m0001-operator"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


@dataclass
class PortalEnv:
    app: Starlette
    pool: asyncpg.Pool
    settings: PortalSettings

    def client(self, address: str = "10.0.0.1") -> httpx.AsyncClient:
        """A browser of its own (cookie jar) coming from ``address``."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", follow_redirects=False)


def test_settings(**changes: object) -> PortalSettings:
    """Settings for tests: the test secret, small throttle bounds."""
    base = PortalSettings(secret=SECRET, login_account_failures_max=3, login_address_failures_max=6)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(name="portal_env")
async def portal_env_fixture(pool: asyncpg.Pool) -> AsyncIterator[PortalEnv]:
    async with pool.acquire() as conn, conn.transaction():
        await ledger_demo.seed(conn, cards=3)
        await portal_demo.seed_users(conn)
    app = create_app(test_settings(), pool, ledger_settings(), MASTER_KEY)
    async with app.router.lifespan_context(app):  # the seat's posting engine runs as under uvicorn
        yield PortalEnv(app, pool, test_settings())
    assert await check_books(pool) == [], "the books do not balance after a portal test"


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on a page."""
    m = _CSRF.search(page)
    assert m, "no csrf_token on the page"
    return html.unescape(m.group(1))


async def login(client: httpx.AsyncClient, user: str, password: str = PASSWORD) -> httpx.Response:
    """Log in through the login form; returns the POST's response (303 on success)."""
    form_page = await client.get("/login")
    return await client.post("/login", data={"login": user, "password": password,
                                             "csrf_token": csrf_of(form_page.text), "next": "/"})


async def logged_in(env: PortalEnv, user: str, address: str = "10.0.0.1") -> httpx.AsyncClient:
    """A client logged in as ``user``."""
    client = env.client(address)
    response = await login(client, user)
    assert response.status_code == 303, response.text
    return client


async def post_form(client: httpx.AsyncClient, form_path: str, action: str | None = None,
                    **fields: str) -> httpx.Response:
    """GET a page for its CSRF token, then POST ``fields`` to ``action`` (default: the same path)."""
    page = await client.get(form_path)
    return await client.post(action or form_path, data={"csrf_token": csrf_of(page.text), **fields})


async def member_login(client: httpx.AsyncClient, identifier: str, password: str = PASSWORD) -> httpx.Response:
    """Log in through the member login form (card number or phone); the POST's response (303 on success)."""
    form_page = await client.get("/member/login")
    return await client.post("/member/login", data={"login": identifier, "password": password,
                                                    "csrf_token": csrf_of(form_page.text), "next": "/member"})


async def member_logged_in(env: PortalEnv, identifier: str = "13800000001",
                           address: str = "10.0.0.9") -> httpx.AsyncClient:
    """A client logged in as the member ``identifier`` names (default: demo member 1, by phone)."""
    client = env.client(address)
    response = await member_login(client, identifier)
    assert response.status_code == 303, response.text
    return client

"""The portal's pages over HTTP: merchants, operators, profile, transactions, languages, headers."""

from __future__ import annotations

import asyncpg
from portal_support import PortalEnv, logged_in, login, portal_env, post_form  # noqa: F401

from portal.security_headers import CSP


async def test_login_and_home(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "admin")
    home = await client.get("/")
    assert home.status_code == 200, home.text
    assert "Platform Admin" in home.text
    assert home.text.count("<h1") == 1

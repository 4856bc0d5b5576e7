"""Demo users of the portal, one per role, over the demo merchants (ledger.loyalty.demo).

Known passwords, so they are created without a forced change: for a demo
database only, never for one that holds real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from portal.users import create_user

DEMO_PASSWORD = "switchd-demo"


@dataclass(frozen=True)
class DemoUser:
    login: str
    display_name: str
    role: str
    merchant_id: str | None


DEMO_USERS = (
    DemoUser("admin", "Platform Admin", "platform_admin", None),
    DemoUser("operator", "Platform Operator", "platform_operator", None),
    DemoUser("m0001-admin", "Books Admin", "merchant_admin", "M0001"),
    DemoUser("m0001-operator", "Books Cashier", "merchant_operator", "M0001"),
    DemoUser("m0002-admin", "Coffee Admin", "merchant_admin", "M0002"),
)


async def seed_users(conn: asyncpg.Connection, password: str = DEMO_PASSWORD) -> list[str]:
    """Create the demo users that do not exist yet (after ledger.loyalty.demo.seed); returns their logins."""
    for u in DEMO_USERS:
        if await conn.fetchval("SELECT 1 FROM portal.users WHERE login = $1", u.login):
            continue
        await create_user(conn, u.login, u.display_name, password, u.role, u.merchant_id,
                          must_change_password=False)
    return [u.login for u in DEMO_USERS]

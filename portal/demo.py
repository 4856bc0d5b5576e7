"""Demo users of the portal, one per role, over the demo merchants (ledger.loyalty.demo).

Known passwords, so they are created without a forced change: for a demo
database only, never for one that holds real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ledger.loyalty import card_numbers
from ledger.loyalty.demo import demo_pan
from portal.passwords import hash_password_async
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
    """Create the demo users that do not exist yet, and the demo members' logins (after
    ledger.loyalty.demo.seed); returns the users' logins."""
    await seed_members(conn, password)
    for u in DEMO_USERS:
        if await conn.fetchval("SELECT 1 FROM portal.users WHERE login = $1", u.login):
            continue
        await create_user(conn, u.login, u.display_name, password, u.role, u.merchant_id,
                          must_change_password=False)
    return [u.login for u in DEMO_USERS]


@dataclass(frozen=True)
class DemoMember:
    card: int  # the n-th demo card (ledger.loyalty.demo.demo_pan)
    phone: str


# Members who can log in to the member pages with their card number or phone (and DEMO_PASSWORD).
DEMO_MEMBERS = (DemoMember(1, "13800000001"), DemoMember(2, "13800000002"))


async def seed_members(conn: asyncpg.Connection, password: str = DEMO_PASSWORD) -> list[str]:
    """Give the demo members (of demo cards that exist) a login phone and a password without a forced
    change, unless they have one; returns the card numbers they log in with."""
    logins = []
    password_hash = None
    for m in DEMO_MEMBERS:
        card_id = await card_numbers.card_id_by_number(conn, demo_pan(m.card))
        member_id = None if card_id is None else await conn.fetchval(
            "SELECT member_id FROM loyalty.cards WHERE id = $1", card_id)
        if member_id is None:
            continue
        logins.append(demo_pan(m.card))
        if await conn.fetchval("SELECT 1 FROM portal.member_logins WHERE member_id = $1", member_id):
            continue
        password_hash = password_hash or await hash_password_async(password)
        await conn.execute("UPDATE loyalty.members SET phone = $2 WHERE id = $1 AND phone IS NULL", member_id, m.phone)
        await conn.execute("INSERT INTO portal.member_logins(member_id, password_hash, must_change_password) "
                           "VALUES ($1, $2, false)", member_id, password_hash)
    return logins

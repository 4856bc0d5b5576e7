"""The member's top-up card page (CSRF form, points credited once, refusals in words, guessing
locked out) and the platform's revenue page with its chart (a merchant's users may not see it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from portal_support import (
    MASTER_KEY,
    PortalEnv,
    csrf_of,
    logged_in,
    member_logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
)
from voucher_support import sold_batch


async def test_member_redeems_a_card_once(portal_env: PortalEnv, tmp_path: Path) -> None:
    codes = await sold_batch(portal_env.pool, MASTER_KEY, tmp_path, count=2, points=300)
    (s1, c1), (s2, _) = sorted(codes.items())
    client = await member_logged_in(portal_env)
    form = await client.get("/member/voucher")
    assert form.status_code == 200 and 'name="code"' in form.text
    card = form.text.split('<option value="')[1].split('"')[0]
    token = csrf_of(form.text)
    # No CSRF token: refused before anything is done.
    assert (await client.post("/member/voucher", data={"serial": s1, "code": c1, "card_id": card})).status_code == 403
    done = await client.post("/member/voucher", data={"csrf_token": token, "serial": s1, "code": c1, "card_id": card})
    assert done.status_code == 200 and "300" in done.text and 'role="status"' in done.text
    assert c1 not in done.text
    again = await client.post("/member/voucher", data={"csrf_token": token, "serial": s1, "code": c1,
                                                       "card_id": card})
    assert again.status_code == 200  # the same card: the first redemption answered again
    credited = await portal_env.pool.fetchval(
        "SELECT sum(points_delta) FROM loyalty.transactions WHERE txn_type = 'voucher_redeem' AND channel = 'web'")
    assert credited == 300
    # Another member's card id is refused; so is a wrong code; the code typed is not shown back.
    other_card = await portal_env.pool.fetchval(
        "SELECT id FROM loyalty.cards WHERE member_id <> (SELECT member_id FROM loyalty.cards WHERE id = $1) "
        "ORDER BY id LIMIT 1", int(card))
    wrong = await client.post("/member/voucher", data={"csrf_token": token, "serial": s2, "code": c1,
                                                       "card_id": str(other_card)})
    assert wrong.status_code == 400 and 'role="alert"' in wrong.text
    for n in range(portal_env.settings.vouchers.failures_max):
        bad = await client.post("/member/voucher", data={"csrf_token": token, "serial": s2, "code": f"{n:016d}",
                                                         "card_id": card})
        assert bad.status_code in (400, 429) and f"{n:016d}" not in bad.text
    locked = await client.post("/member/voucher", data={"csrf_token": token, "serial": s2, "code": c1,
                                                        "card_id": card})
    assert locked.status_code == 429


async def test_revenue_page_for_the_platform_only(portal_env: PortalEnv, tmp_path: Path) -> None:
    await sold_batch(portal_env.pool, MASTER_KEY, tmp_path, count=4, points=100)  # 4 x 250 fen to M0001
    today = dt.date.today()
    admin = await logged_in(portal_env, "admin")
    page = await admin.get(f"/revenue?date_from={(today - dt.timedelta(days=3)).isoformat()}"
                           f"&date_to={(today + dt.timedelta(days=3)).isoformat()}")
    assert page.status_code == 200
    assert "<svg" in page.text and "Top-up card sales" in page.text and "1000" in page.text
    bad = await admin.get("/revenue?date_from=2026-02-01&date_to=2026-01-01")
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    merchant = await logged_in(portal_env, "m0001-admin")
    assert (await merchant.get("/revenue")).status_code == 403

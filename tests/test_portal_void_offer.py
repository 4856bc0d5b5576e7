"""The transaction page offers "Void this transaction" only when the ledger would take the void:
not after a refund (even partial), which the ledger answers with a decline."""

from __future__ import annotations

import re

from portal_support import PortalEnv, csrf_of, logged_in, portal_env_fixture  # noqa: F401
from test_portal_seat import rrn_of, seat_form, take

VOID_BUTTON = "Void this transaction"
_REQUEST_IDS = re.compile(r'name="request_id" value="([^"]+)"')


async def test_no_void_is_offered_once_a_refund_stands(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    await take(client, "load", amount="100")
    buy = rrn_of((await take(client, "sv_purchase", amount="40")).text)
    page = (await client.get(f"/transactions/rrn/{buy}")).text
    assert VOID_BUTTON in page
    refund_id = _REQUEST_IDS.findall(page)[-1]
    part = await client.post(f"/transactions/rrn/{buy}/refund", data={"csrf_token": csrf_of(page),
                                                                       "request_id": refund_id, "amount": "15"})
    assert "Approved." in part.text, part.text
    after = (await client.get(f"/transactions/rrn/{buy}")).text
    assert VOID_BUTTON not in after and "Refund" in after  # the rest may still be refunded
    # What the page no longer offers, the ledger refuses: a void posted anyway is declined.
    token, request_id = await seat_form(client)
    refused = await client.post(f"/transactions/rrn/{buy}/void", data={"csrf_token": token, "request_id": request_id})
    assert refused.status_code == 200 and "Approved." not in refused.text
    assert await portal_env.pool.fetchval(
        "SELECT reason FROM loyalty.transactions WHERE txn_type = 'void'") == "invalid_txn"


async def test_no_void_is_offered_for_a_day_already_closed(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    earn = rrn_of((await take(client, "earn", amount="30")).text)
    assert VOID_BUTTON in (await client.get(f"/transactions/rrn/{earn}")).text
    await portal_env.pool.execute("UPDATE ledger.business_day SET open_date = open_date + 1 WHERE singleton")
    page = (await client.get(f"/transactions/rrn/{earn}")).text
    assert VOID_BUTTON not in page and "Refund" in page

"""The member's own data: profile (read and edit), balances per card, transaction history."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ledger.loyalty import wallet
from portal.api.body import Text, check
from portal.api.endpoint import Call, endpoint, json_response
from portal.api.problems import Problem, not_found

_PROFILE_EDIT = {name: Text(chars_max) for name, chars_max in wallet.PROFILE_LIMITS.items()}


def _profile_view(found: dict[str, Any]) -> dict[str, Any]:
    return {"id": found["id"], "name": found["name"], "phone": found["phone"], "email": found["email"],
            "delivery_address": found["delivery_address"],
            "cards": [{"id": c["id"], "pan": c["pan"], "status": c["status"], "expiry": c["expiry"]}
                      for c in found["cards"]]}


async def _profile(call: Call) -> Response:
    found = await wallet.profile(call.pool, call.member_id)
    if found is None:
        raise not_found()
    return json_response(_profile_view(found))


@endpoint()
async def get_me(call: Call) -> Response:
    """GET /me: the member's profile and cards (numbers masked)."""
    return await _profile(call)


@endpoint(body=True)
async def patch_me(call: Call) -> Response:
    """PATCH /me: change name, email or delivery address (the phone is a login: the merchant changes it)."""
    changes = check(call.body, _PROFILE_EDIT)
    if "email" in changes and changes["email"] and ("@" not in changes["email"] or " " in changes["email"]):
        raise Problem(400, "invalid-body", "email must be an e-mail address.")
    await wallet.update_profile(call.pool, call.member_id, changes)
    return await _profile(call)


@endpoint()
async def get_balances(call: Call) -> Response:
    """GET /me/balances: per card, points per program and stored value per currency."""
    return json_response({"cards": await wallet.balances(call.pool, call.member_id)})


def transaction_view(t: dict[str, Any]) -> dict[str, Any]:
    """A history row as the API shows it: amounts as integers with their program or currency."""
    return {
        "id": t["id"], "created_at": t["created_at"].isoformat(), "business_date": t["business_date"].isoformat(),
        "type": t["txn_type"], "approved": t["reason"] == "approved", "reason": t["reason"],
        "channel": t["channel"], "merchant_id": t["merchant_id"], "card_id": t["card_id"], "pan": t["pan"],
        "points": {"points": t["points_delta"], "program": t["program"]} if t["points_delta"] else None,
        "stored_value": ({"amount_minor": t["money_delta_minor"], "currency": t["currency"]}
                         if t["money_delta_minor"] else None),
    }


@endpoint()
async def get_transactions(call: Call) -> Response:
    """GET /me/transactions: every card's transactions over every channel, newest first, paged."""
    scope = f"transactions:{call.member_id}"
    limit = call.limit()
    before = call.after(scope)
    found = await wallet.history(call.pool, call.member_id, before if isinstance(before, int) else None, limit)
    items = [transaction_view(t) for t in found["transactions"]]
    return json_response({"items": items, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_before_id"] is not None)})


ROUTES = [
    ("/me", get_me, ["GET"], "api_me"),
    ("/me", patch_me, ["PATCH"], "api_me_edit"),
    ("/me/balances", get_balances, ["GET"], "api_me_balances"),
    ("/me/transactions", get_transactions, ["GET"], "api_me_transactions"),
]

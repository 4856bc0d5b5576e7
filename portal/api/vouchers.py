"""Points top-up cards for apps: ``POST /vouchers/redeem`` (Idempotency-Key).

A replay under the same key answers the first answer (portal.api.idempotency); a second key for a
card already credited to the same member's card answers it again (``replayed``), another member's
attempt is 422 ``used``. Failed guesses are counted per member and client address; over the
limit, 429 ``locked`` whatever the code.
"""

from __future__ import annotations

from starlette.responses import Response

from ledger.loyalty import vouchers
from ledger.loyalty.outcomes import Channel
from portal.api.body import Field, Int, Text, check
from portal.api.endpoint import Call, client_address, endpoint, json_response
from portal.api.problems import Problem
from portal.vouchers import Unavailable, redeem_for_member

_REDEEM: dict[str, Field] = {"serial": Text(vouchers.SERIAL_DIGITS + 8, required=True),
                             "code": Text(vouchers.CODE_DIGITS + 8, required=True),
                             "card_id": Int(1, 2**63 - 1)}

# Refusal -> (status, problem type, detail). One answer for unknown serial and wrong code.
_REFUSALS = {
    vouchers.Refusal.LOCKED: (429, "rate-limited", "Too many failed attempts; try again later."),
    vouchers.Refusal.INVALID: (422, "refused", "No top-up card has this serial and code."),
    vouchers.Refusal.USED: (422, "refused", "This top-up card has been redeemed."),
    vouchers.Refusal.EXPIRED: (422, "refused", "This top-up card has expired."),
    vouchers.Refusal.SUSPENDED: (422, "refused", "This top-up card cannot be redeemed."),
    vouchers.Refusal.NOT_SOLD: (422, "refused", "This top-up card cannot be redeemed."),
    vouchers.Refusal.NO_CARD: (422, "refused", "The member holds no active card of that id."),
    vouchers.Refusal.ERROR: (503, "unavailable", "The top-up card could not be redeemed now."),
}


@endpoint(body=True, moves_value=True)
async def redeem(call: Call) -> Response:
    """POST /vouchers/redeem: credit the points of a top-up card to one of the member's cards
    (default: its first active card), once. 200 with the points credited."""
    fields = check(call.body, _REDEEM)
    try:
        done = await redeem_for_member(call.api.portal, call.member_id, fields.get("card_id"), fields["serial"],
                                       fields["code"], client_address(call.request), Channel.API)
    except Unavailable:
        raise Problem(503, "unavailable", "Top-up cards cannot be redeemed now.") from None
    if done.refusal is not None:
        status, kind, detail = _REFUSALS[done.refusal]
        raise Problem(status, kind, detail, extra={"code": str(done.refusal)})
    return json_response({"serial": done.serial, "card_id": done.card_id,
                          "points": {"points": done.points, "program": done.program}, "replayed": done.replayed})


ROUTES = [("/vouchers/redeem", redeem, ["POST"], "api_voucher_redeem")]

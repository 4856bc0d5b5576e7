"""Exchange between programs for apps: the rates in force (public) and the member's exchanges.

An exchange moves value: it needs an Idempotency-Key, which also becomes the exchange's
request key in the ledger (``request_key_of``), so a retry after a lost answer finds the
same exchange instead of making another.
"""

from __future__ import annotations

import hashlib

from starlette.responses import Response

from ledger.loyalty import rates
from ledger.loyalty.exchange import POINTS_MAX, Converted, ExchangeError, convert_points
from ledger.loyalty.outcomes import Channel, Reason
from portal.api.body import Field, Int, Text, check
from portal.api.endpoint import Call, endpoint, json_response
from portal.api.problems import Problem, not_found

PROGRAM_CHARS_MAX = 16
# A decline's reason -> (status, problem type). Others: 422 refused.
_ERRORS = {
    Reason.INSUFFICIENT: (422, "insufficient-balance"),
    Reason.DUPLICATE_MISMATCH: (409, "conflict"),
    Reason.SYSTEM_ERROR: (503, "unavailable"),
    Reason.OUTCOME_UNKNOWN: (503, "unavailable"),
}


def request_key_of(idempotency_key: str) -> str:
    """The exchange's request key for an API Idempotency-Key.

    >>> request_key_of("abc") == request_key_of("abc") != request_key_of("abd")
    True
    """
    return "api-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def rate_view(r: rates.Rate) -> dict[str, object]:
    """A rate as the API shows it."""
    return {"from_program": r.from_program, "to_program": r.to_program, "rate_num": r.rate_num,
            "rate_den": r.rate_den, "fee_bps": r.fee_bps, "effective_from": r.effective_from.isoformat()}


def exchange_view(c: Converted, card_id: int) -> dict[str, object]:
    """An exchange as the API shows it."""
    return {"journal_id": c.journal_id, "business_date": c.business_date, "card_id": card_id,
            "given": {"points": c.points_in, "program": c.from_program},
            "received": {"points": c.points_out, "program": c.to_program},
            "fee": {"points": c.fee_points, "program": c.to_program},
            "rate_num": c.rate_num, "rate_den": c.rate_den, "fee_bps": c.fee_bps}


@endpoint(auth=False)
async def list_rates(call: Call) -> Response:
    """GET /rates: the rates in force now, one per pair of programs (``?from=``, ``?to=``)."""
    q = call.request.query_params
    found = await rates.current(call.pool, None, (q.get("from") or "")[:PROGRAM_CHARS_MAX] or None,
                                (q.get("to") or "")[:PROGRAM_CHARS_MAX] or None)
    return json_response({"items": [rate_view(r) for r in found]})


_EXCHANGE: dict[str, Field] = {"from_program": Text(PROGRAM_CHARS_MAX, required=True),
                               "to_program": Text(PROGRAM_CHARS_MAX, required=True),
                               "points": Int(1, POINTS_MAX, required=True), "card_id": Int(1, 2**63 - 1)}


@endpoint(body=True, moves_value=True)
async def exchange(call: Call) -> Response:
    """POST /exchanges: convert points of one program into another's on one of the member's cards
    (default: its first active card), at the rate in force. 201."""
    fields = check(call.body, _EXCHANGE)
    portal = call.api.portal
    if portal.loyalty is None:
        raise Problem(503, "unavailable", "Exchanges cannot be made now: the portal runs without the ledger.")
    card_id = await call.pool.fetchval(
        "SELECT c.id FROM loyalty.cards c WHERE c.member_id = $1 AND ($2::bigint IS NULL OR c.id = $2) "
        "ORDER BY (c.status = 'active') DESC, c.id LIMIT 1", call.member_id, fields.get("card_id"))
    if card_id is None:
        raise not_found("No such card.")
    assert call.idempotency_key is not None
    try:
        done = await convert_points(portal.loyalty.ledger, call.pool, int(card_id), fields["from_program"],
                                    fields["to_program"], fields["points"], request_key_of(call.idempotency_key),
                                    Channel.API, None, portal.settings.exchange)
    except ExchangeError as exc:
        status, kind = _ERRORS.get(exc.reason, (422, "refused"))
        raise Problem(status, kind, str(exc), extra={"code": str(exc.reason)}) from None
    return json_response(exchange_view(done, int(card_id)), 201)


ROUTES = [
    ("/rates", list_rates, ["GET"], "api_rates"),
    ("/exchanges", exchange, ["POST"], "api_exchanges_new"),
]

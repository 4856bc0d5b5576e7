"""Public lists: merchants (and the filters that goods and promotions share)."""

from __future__ import annotations

from starlette.responses import Response

from ledger.loyalty.merchants import search_merchants
from portal.api.endpoint import Call, endpoint, json_response

PROGRAM_CHARS_MAX = 16
MERCHANT_CHARS_MAX = 15


def program_filter(call: Call) -> str | None:
    """``?program=`` (a program code), or None."""
    value = call.request.query_params.get("program")
    return value[:PROGRAM_CHARS_MAX] if value else None


def merchant_filter(call: Call) -> str | None:
    """``?merchant=`` (a merchant id), or None."""
    value = call.request.query_params.get("merchant")
    return value[:MERCHANT_CHARS_MAX] if value else None


@endpoint(auth=False)
async def list_merchants(call: Call) -> Response:
    """GET /merchants: active merchants by id, ``?program=`` to keep one program's."""
    program = program_filter(call)
    scope = f"merchants:{program or ''}"
    limit = call.limit()
    after = call.after(scope)
    found = await search_merchants(call.pool, program=program, status="active",
                                   after_id=after if isinstance(after, str) else None, limit=limit)
    items = [{"id": m["merchant_id"], "name": m["name"], "program": m["program"]} for m in found["merchants"]]
    return json_response({"items": items, "next_cursor": call.next_cursor(
        scope, items, "id", limit, found["next_after_id"] is not None)})


ROUTES = [
    ("/merchants", list_merchants, ["GET"], "api_merchants"),
]

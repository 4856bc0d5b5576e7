"""The OpenAPI 3.1 document of the member API, written as data; served at /api/v1/openapi.json.

tests/test_api_openapi.py holds it to the implementation: every route under
/api/v1 is in it with its methods and nothing else is, and the tests' answers
validate against its schemas. Schemas are JSON Schema 2020-12 (OpenAPI 3.1's).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from portal.api.endpoint import Call, endpoint, json_response

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these properties, the first all required, nothing else allowed."""
    return {"type": "object", "properties": required | (optional or {}), "required": list(required),
            "additionalProperties": False}


def page_of(item: str) -> Schema:
    """A page of a list: its items and the cursor of the next page (null on the last)."""
    return obj({"items": {"type": "array", "items": ref(item)}, "next_cursor": {"type": ["string", "null"]}})


INT = {"type": "integer"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NSTR = {"type": ["string", "null"]}
DATETIME = {"type": "string", "format": "date-time"}
DATE = {"type": "string", "format": "date"}

SCHEMAS: dict[str, Schema] = {
    "Problem": {"type": "object", "required": ["type", "title", "status", "detail"],
                "properties": {"type": {"type": "string", "format": "uri"}, "title": STR, "status": INT,
                               "detail": STR}},
    "LoginRequest": obj({"login": {**STR, "description": "A card number or the member's phone"},
                         "password": STR}),
    "RefreshRequest": obj({"refresh_token": STR}),
    "PasswordChange": obj({"current_password": STR, "new_password": STR}),
    "Tokens": obj({"access_token": STR, "token_type": {"const": "Bearer"}, "expires_in": INT,
                   "refresh_token": STR, "refresh_expires_in": INT, "password_change_required": BOOL}),
    "Card": obj({"id": INT, "pan": {**STR, "description": "Masked: first 6 and last 4 digits"},
                 "status": {"enum": ["active", "blocked", "expired"]}, "expiry": NSTR}),
    "Profile": obj({"id": INT, "name": STR, "phone": NSTR, "email": STR, "delivery_address": STR,
                    "cards": {"type": "array", "items": ref("Card")}}),
    "ProfileEdit": obj({}, {"name": {**STR, "maxLength": 80}, "email": {**STR, "maxLength": 120},
                            "delivery_address": {**STR, "maxLength": 300}}),
    "Points": obj({"points": INT, "program": STR}),
    "PointsBalance": obj({"points": INT, "available_points": INT, "program": STR},
                         {"next_expiry": obj({"points": INT, "date": DATE})}),
    "Money": obj({"amount_minor": INT, "currency": STR}),
    "MoneyBalance": obj({"amount_minor": INT, "available_minor": INT, "currency": STR}),
    "CardBalances": obj({"card_id": INT, "pan": STR, "status": STR,
                         "points": {"type": "array", "items": ref("PointsBalance")},
                         "stored_value": {"type": "array", "items": ref("MoneyBalance")}}),
    "Balances": obj({"cards": {"type": "array", "items": ref("CardBalances")}}),
    "Transaction": obj({
        "id": INT, "created_at": DATETIME, "business_date": DATE, "type": STR, "approved": BOOL, "reason": STR,
        "channel": {"enum": ["terminal", "web", "mall", "api", "cli"]}, "merchant_id": NSTR,
        "card_id": INT, "pan": STR, "points": {"oneOf": [ref("Points"), {"type": "null"}]},
        "stored_value": {"oneOf": [ref("Money"), {"type": "null"}]}}),
    "TransactionPage": page_of("Transaction"),
    "Merchant": obj({"id": STR, "name": STR, "program": STR}),
    "MerchantPage": page_of("Merchant"),
    "Good": obj({"id": INT, "merchant_id": STR, "merchant_name": STR, "program": STR, "name": STR,
                 "description": STR, "image_url": NSTR,
                 "price_points": {"oneOf": [ref("Points"), {"type": "null"}]},
                 "price_money": {"oneOf": [ref("Money"), {"type": "null"}]},
                 "stock": INT, "valid_from": {"type": ["string", "null"], "format": "date-time"},
                 "valid_until": {"type": ["string", "null"], "format": "date-time"}}),
    "GoodPage": page_of("Good"),
    "OrderCreate": obj({"good_id": INT, "pay": {"enum": ["points", "money"]}},
                       {"quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                        "card_id": {**INT, "description": "Default: the member's first active card"},
                        "delivery_address": {**STR, "maxLength": 300,
                                             "description": "Default: the profile's delivery address"}}),
    "Order": obj({"id": INT, "status": {"enum": ["placing", "placed", "rejected", "confirmed", "shipped",
                                                 "completed", "cancelled", "refunded"]},
                  "good_id": INT, "good_name": STR, "merchant_id": STR, "merchant_name": STR, "card_id": INT,
                  "quantity": INT, "pay": {"enum": ["points", "money"]},
                  "amount": {"oneOf": [ref("Points"), ref("Money")]},
                  "refunded": {"oneOf": [ref("Points"), ref("Money")]},
                  "delivery_address": STR, "channel": STR,
                  "hold_expires_at": {"type": ["string", "null"], "format": "date-time"},
                  "created_at": DATETIME, "updated_at": DATETIME}),
    "OrderPage": page_of("Order"),
    "Promotion": obj({"id": INT, "merchant_id": STR, "merchant_name": STR, "title": STR, "body": STR,
                      "program": {**NSTR, "description": "null: for every member"},
                      "image_url": {**NSTR, "description": "A path of the portal (/media/{id})"},
                      "valid_from": DATETIME, "valid_until": DATETIME}),
    "PromotionPage": page_of("Promotion"),
    "Message": obj({"id": INT, "sender_merchant_id": NSTR, "sender_name": NSTR, "subject": STR, "body": STR,
                    "created_at": DATETIME, "read": BOOL}),
    "MessagePage": obj({"items": {"type": "array", "items": ref("Message")}, "unread_count": INT,
                        "next_cursor": NSTR}),
    "FeedbackCreate": obj({"merchant_id": STR, "subject": {**STR, "maxLength": 120},
                           "body": {**STR, "maxLength": 4000}}),
    "FeedbackMessage": obj({"id": INT, "side": {"enum": ["member", "merchant", "platform"]}, "body": STR,
                            "created_at": DATETIME}),
    "FeedbackThread": obj({"id": INT, "merchant_id": STR, "merchant_name": STR, "subject": STR,
                           "status": {"enum": ["open", "answered", "closed"]}, "created_at": DATETIME,
                           "updated_at": DATETIME, "messages": INT},
                          {"thread": {"type": "array", "items": ref("FeedbackMessage")}}),
    "FeedbackPage": page_of("FeedbackThread"),
    "VoucherRedeem": obj({"serial": {**STR, "description": "The card's serial, 12 digits"},
                          "code": {**STR, "description": "The card's secret code, 16 digits"}},
                         {"card_id": {**INT, "description": "Default: the member's first active card"}}),
    "VoucherRedeemed": obj({"serial": STR, "card_id": INT, "points": ref("Points"),
                            "replayed": {**BOOL, "description": "This card had credited the same card before"}}),
    "Rate": obj({"from_program": STR, "to_program": STR, "rate_num": INT, "rate_den": INT,
                 "fee_bps": {**INT, "description": "Kept by the exchange: basis points of the points received"},
                 "effective_from": DATETIME}),
    "RateTable": obj({"items": {"type": "array", "items": ref("Rate")}}),
    "ExchangeCreate": obj({"from_program": STR, "to_program": STR,
                           "points": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000}},
                          {"card_id": {**INT, "description": "Default: the member's first active card"}}),
    "Exchange": obj({"journal_id": INT, "business_date": DATE, "card_id": INT, "given": ref("Points"),
                     "received": ref("Points"), "fee": ref("Points"), "rate_num": INT, "rate_den": INT,
                     "fee_bps": INT}),
}

_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
_STATUS_TEXT = {400: "Bad request", 401: "No valid access token", 403: "Not allowed to this token",
                404: "Not found (or another member's)", 409: "Idempotency-Key conflict",
                413: "Body too large", 415: "Not JSON", 422: "Refused", 429: "Rate limited"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
LIMIT = {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}
CURSOR = {"name": "cursor", "in": "query", "required": False, "schema": STR,
          "description": "next_cursor of the previous page"}
PROGRAM = {"name": "program", "in": "query", "required": False, "schema": STR}
MERCHANT = {"name": "merchant", "in": "query", "required": False, "schema": STR}
STATUS = {"name": "status", "in": "query", "required": False, "schema": STR}
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": True,
                   "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,64}$"},
                   "description": "Same key and body: the first answer again; same key, another body: 409"}


def op(summary: str, ok: int, schema: str | None, errors: tuple[int, ...] = (), auth: bool = True,
       body: str | None = None, params: tuple[Schema, ...] = (), moves_value: bool = False) -> Schema:
    """One operation: its answer on success (``schema`` None: no body) and the problems it may answer."""
    responses: dict[str, Any] = {str(ok): {"description": "OK"} if schema is None else
                                 {"description": "OK", "content": {"application/json": {"schema": ref(schema)}}}}
    codes = set(errors) | {429} | ({401} if auth else set()) | ({400, 413, 415} if body else set())
    if moves_value:
        codes |= {400, 409}
    for code in sorted(codes):
        responses[str(code)] = {"description": _STATUS_TEXT.get(code, "Error"), "content": _PROBLEM}
    out: Schema = {"summary": summary, "responses": responses}
    parameters = list(params) + ([IDEMPOTENCY_KEY] if moves_value else [])
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    out["security"] = BEARER if auth else []
    return out


PATHS: dict[str, dict[str, Schema]] = {
    "/sessions": {"post": op("Log in with a card number or phone and a password", 201, "Tokens", (401,),
                             auth=False, body="LoginRequest")},
    "/sessions/refresh": {"post": op("New tokens for a refresh token (rotated; reuse revokes the session)", 200,
                                     "Tokens", (401,), auth=False, body="RefreshRequest")},
    "/sessions/current": {"delete": op("Log out: this session's tokens end", 204, None)},
    "/me/password": {"post": op("Change the password", 204, None, (403, 422), body="PasswordChange")},
    "/me": {"get": op("The member's profile and cards", 200, "Profile", (403,)),
            "patch": op("Change name, email or delivery address", 200, "Profile", (403,), body="ProfileEdit")},
    "/me/balances": {"get": op("Points per program and stored value, per card", 200, "Balances", (403,))},
    "/me/transactions": {"get": op("Transactions over every channel, newest first", 200, "TransactionPage",
                                   (400, 403), params=(LIMIT, CURSOR))},
    "/merchants": {"get": op("Active merchants", 200, "MerchantPage", (400,), auth=False,
                             params=(PROGRAM, LIMIT, CURSOR))},
    "/goods": {"get": op("Goods on offer now, by id", 200, "GoodPage", (400,), auth=False,
                         params=(MERCHANT, PROGRAM, LIMIT, CURSOR))},
    "/goods/{id}": {"get": op("One good on offer", 200, "Good", (404,), auth=False, params=(ID,))},
    "/orders": {"post": op("Order a good: its amount is held until the merchant confirms", 201, "Order",
                           (403, 404, 422, 503), body="OrderCreate", moves_value=True),
                "get": op("The member's orders, newest first", 200, "OrderPage", (400, 403),
                          params=(STATUS, LIMIT, CURSOR))},
    "/orders/{id}": {"get": op("One of the member's orders", 200, "Order", (403, 404), params=(ID,))},
    "/orders/{id}/cancel": {"post": op("Cancel a placed order: the hold is released", 200, "Order",
                                       (403, 404, 503), params=(ID,), moves_value=True)},
    "/promotions": {"get": op("Published promotions, newest first", 200, "PromotionPage", (400,), auth=False,
                              params=(MERCHANT, PROGRAM, LIMIT, CURSOR))},
    "/me/messages": {"get": op("The mailbox, newest first, and its unread count", 200, "MessagePage", (400, 403),
                               params=(LIMIT, CURSOR))},
    "/me/messages/{id}": {"get": op("One message (marked read)", 200, "Message", (403, 404), params=(ID,)),
                          "delete": op("Remove a message from the mailbox", 204, None, (403, 404), params=(ID,))},
    "/feedback": {"post": op("Feedback to a merchant: a new thread", 201, "FeedbackThread", (403, 404, 422),
                             body="FeedbackCreate"),
                  "get": op("The member's feedback threads, newest first", 200, "FeedbackPage", (400, 403),
                            params=(LIMIT, CURSOR))},
    "/feedback/{id}": {"get": op("One thread with its messages", 200, "FeedbackThread", (403, 404), params=(ID,))},
    "/vouchers/redeem": {"post": op("Redeem a points top-up card: its points credited once", 200,
                                    "VoucherRedeemed", (403, 422, 503), body="VoucherRedeem", moves_value=True)},
    "/rates": {"get": op("Exchange rates between programs in force now, one per pair", 200, "RateTable", (),
                         auth=False, params=({"name": "from", "in": "query", "required": False, "schema": STR},
                                             {"name": "to", "in": "query", "required": False, "schema": STR}))},
    "/exchanges": {"post": op("Exchange points of one program into another's at the rate in force", 201,
                              "Exchange", (403, 404, 422, 503), body="ExchangeCreate", moves_value=True)},
    "/openapi.json": {"get": {"summary": "This document", "security": [],
                              "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                                            "429": {"description": "Rate limited", "content": _PROBLEM}}}},
}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "switchd member API", "version": "1",
                 "description": "For members' apps: tokens, balances, history, the points mall, mail. "
                                "Errors are RFC 9457 problem details. See docs/api.md."},
        "servers": [{"url": "/api/v1"}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@endpoint(auth=False)
async def get_openapi(call: Call) -> Response:
    """GET /openapi.json: the document."""
    return json_response(document())


ROUTES = [("/openapi.json", get_openapi, ["GET"], "api_openapi")]

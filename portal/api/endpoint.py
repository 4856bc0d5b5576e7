"""What every API handler shares: rate limits, the bearer token, the JSON body, Idempotency-Key,
and errors as problem+json.

A handler is ``async def handler(call: Call) -> Response`` wrapped by
``@endpoint(...)``; the wrapper answers every Problem it raises, and any other
exception as a 500 problem with nothing of the exception in it (the log gets its
type, never the request's data).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from starlette.requests import Request
from starlette.responses import Response

from portal.api import idempotency
from portal.api.body import read_json
from portal.api.paging import Cursors, Key, after_key, page_limit
from portal.api.problems import CONTENT_TYPE, Problem, unauthorized
from portal.api.ratelimit import Buckets
from portal.api.tokens import Caller, TokenStore
from portal.web import Portal

log = structlog.get_logger("portal.api")
JSON = "application/json"


@dataclass
class Api:
    """The API's shared state (``request.app.state.api``)."""

    portal: Portal
    tokens: TokenStore
    cursors: Cursors
    address_buckets: Buckets
    member_buckets: Buckets

    @classmethod
    def over(cls, portal: Portal) -> Api:
        """The API's state over the portal's."""
        s = portal.settings.api
        return cls(portal, TokenStore(portal.pool, portal.settings), Cursors(portal.settings.secret),
                   Buckets(s.rate_address_per_s, s.rate_address_burst, s.rate_buckets_max),
                   Buckets(s.rate_member_per_s, s.rate_member_burst, s.rate_buckets_max))

    @property
    def pool(self) -> asyncpg.Pool:
        return self.portal.pool


@dataclass(frozen=True)
class Call:
    """What a handler gets: the request, the API's state, the member (when authenticated), the body."""

    request: Request
    api: Api
    caller: Caller | None
    body: dict[str, Any]
    idempotency_key: str | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.api.pool

    @property
    def member_id(self) -> int:
        """The authenticated member (handlers declared with auth)."""
        assert self.caller is not None
        return self.caller.member_id

    def limit(self) -> int:
        """The page size asked for (``?limit=``), bounded by ``[api] page_limit_max``."""
        s = self.api.portal.settings.api
        return page_limit(self.request, s.page_limit_default, s.page_limit_max)

    def after(self, scope: str) -> Key | None:
        """The key after which the page starts (``?cursor=``), checked against ``scope``."""
        return after_key(self.request, self.api.cursors, scope)

    def next_cursor(self, scope: str, items: list[dict[str, Any]], key: str, limit: int,
                    more: bool) -> str | None:
        """The cursor of the next page, or None on the last one."""
        return self.api.cursors.encode(scope, items[-1][key]) if more and items else None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (UTF-8, no ASCII escaping: names are often Chinese)."""
    return Response(json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":")),
                    status_code=status, media_type=JSON, headers=headers)


def api_of(request: Request) -> Api:
    """The API state of the (sub-)application serving ``request``."""
    state: Api = request.app.state.api
    return state


def client_address(request: Request) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For there)."""
    return request.client.host if request.client else "unknown"


def _rate_limited(wait_s: float, who: str) -> Problem:
    return Problem(429, "rate-limited", f"Too many requests from this {who}; retry after the delay given.",
                   {"retry-after": str(max(1, math.ceil(wait_s)))})


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


Handler = Callable[[Call], Awaitable[Response]]


def endpoint(auth: bool = True, body: bool = False, moves_value: bool = False,
             password_change_ok: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler. ``auth``: a bearer access token is required (401 otherwise);
    ``body``: the request carries a JSON object; ``moves_value``: an Idempotency-Key is
    required and the first answer is replayed; ``password_change_ok``: allowed to tokens
    that may only change the password (every other route answers them 403)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            api = api_of(request)
            try:
                return await _run(handler, request, api, auth, body, moves_value, password_change_ok)
            except Problem as problem:
                return problem.response()
            except Exception as exc:  # the answer says nothing of it; the log says what it was
                log.error("api_error", path=request.url.path, method=request.method, error=type(exc).__name__)
                return Problem(500, "internal", "Internal error; the operator has been told.").response()

        run.api_options = {"auth": auth, "moves_value": moves_value}  # type: ignore[attr-defined]
        return run

    return wrap


async def _run(handler: Handler, request: Request, api: Api, auth: bool, body: bool, moves_value: bool,
               password_change_ok: bool) -> Response:
    wait_s = api.address_buckets.take(client_address(request))
    if wait_s:
        raise _rate_limited(wait_s, "address")
    caller = None
    if auth:
        caller = await api.tokens.caller(bearer(request))
        if caller is None:
            raise unauthorized()
        wait_s = api.member_buckets.take(f"member:{caller.member_id}")
        if wait_s:
            raise _rate_limited(wait_s, "member")
        if caller.password_change_only and not password_change_ok:
            raise Problem(403, "password-change-required",
                          "This member must change the password first: POST /api/v1/me/password.")
    data = await read_json(request, api.portal.settings.api.body_max_bytes) if body else {}
    if not moves_value:
        return await handler(Call(request, api, caller, data))
    assert caller is not None, "a request that moves value is a member's"
    key = idempotency.key_of(request.headers.get(idempotency.HEADER))
    req_hash = idempotency.request_hash(request.method, request.url.path, data)
    replay = await idempotency.begin(api.pool, caller.member_id, key, req_hash,
                                     api.portal.settings.api.idempotency_ttl_s)
    if replay is not None:
        media = JSON if replay.status < 400 else CONTENT_TYPE
        return Response(replay.body, status_code=replay.status, media_type=media,
                        headers={"idempotent-replayed": "true"})
    try:
        response = await handler(Call(request, api, caller, data, key))
    except Problem as problem:
        response = problem.response()
    except BaseException:
        await idempotency.release(api.pool, caller.member_id, key)
        raise
    await idempotency.finish(api.pool, caller.member_id, key, response.status_code, bytes(response.body))
    return response

"""The API as a Starlette sub-application, mounted by the portal at /api/v1.

Its own exception handlers answer the router's 404 and 405 as problem+json; the
portal's middleware (security headers, the body bound) wraps it like every page.
The shared state (``app.state.api``) is set by :func:`attach` once the portal's
own state exists.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.api import catalog, community, exchange, mall, me, openapi, sessions, vouchers
from portal.api.endpoint import Api
from portal.api.problems import Problem
from portal.web import Portal

PREFIX = "/api/v1"
# Each route module lists its ROUTES (path under PREFIX, endpoint, methods, name); one entry here each.
MODULES = (sessions, me, catalog, mall, community, vouchers, exchange, openapi)
ROUTES: list[tuple[str, Any, list[str], str]] = [route for module in MODULES for route in module.ROUTES]


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return Problem(405, "method-not-allowed", f"{request.method} is not allowed here.",
                       dict(exc.headers or {})).response()
    if exc.status_code == 404:
        return Problem(404, "not-found", "No such resource.").response()
    return Problem(exc.status_code, "bad-request", "The request was not understood.").response()


def create_api() -> Starlette:
    """The API's routes and error handlers (its state comes from :func:`attach`)."""
    routes = [Route(path, endpoint, methods=methods, name=name) for path, endpoint, methods, name in ROUTES]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_problem})


def attach(api_app: Starlette, portal: Portal) -> None:
    """Give the API the portal's shared state (pool, settings, secret)."""
    api_app.state.api = Api.over(portal)

"""Errors as RFC 9457 problem details (``application/problem+json``): a type URI, a title,
the status, a detail; never a traceback.

>>> p = Problem(404, "not-found", "No such order.")
>>> p.body()["type"], p.body()["status"], p.body()["title"]
('https://switchd.dev/problems/not-found', 404, 'Not found')
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://switchd.dev/problems/"

# Every problem type the API answers with, and its title (docs/api.md lists them).
TITLES: dict[str, str] = {
    "bad-request": "Bad request",
    "invalid-body": "The request body is not acceptable",
    "unsupported-media-type": "Unsupported media type",
    "body-too-large": "Request body too large",
    "unauthorized": "Authentication required",
    "login-failed": "Login failed",
    "password-change-required": "The password must be changed first",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "idempotency-key-required": "Idempotency-Key header required",
    "idempotency-key-reused": "Idempotency-Key used for another request",
    "idempotency-key-in-progress": "A request with this Idempotency-Key is still being answered",
    "invalid-cursor": "Invalid cursor",
    "rate-limited": "Too many requests",
    "refused": "Refused",
    "insufficient-balance": "Insufficient points or funds",
    "out-of-stock": "Out of stock",
    "conflict": "Conflict",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
}


class Problem(Exception):
    """An API error: raise it from a handler; the endpoint wrapper answers it as problem+json."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        assert kind in TITLES, kind
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The problem document."""
        return {"type": TYPE_BASE + self.kind, "title": TITLES[self.kind], "status": self.status,
                "detail": self.detail, **self.extra}

    def response(self) -> Response:
        """The problem as an HTTP response."""
        return Response(json.dumps(self.body(), ensure_ascii=False), status_code=self.status,
                        media_type=CONTENT_TYPE, headers=self.headers)


def problem_response(status: int, kind: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """A problem+json response without raising."""
    return Problem(status, kind, detail, headers).response()


def unauthorized(detail: str = "A valid bearer access token is required.") -> Problem:
    """401 with the challenge RFC 6750 asks for."""
    return Problem(401, "unauthorized", detail, {"www-authenticate": 'Bearer realm="switchd"'})


def not_found(detail: str = "Not found.") -> Problem:
    """404: no such object, or one of another member (the same answer for both)."""
    return Problem(404, "not-found", detail)

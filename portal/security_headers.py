"""Response headers that make the browser refuse what the portal never does.

No inline script or style, nothing from another origin, no framing, no MIME
sniffing, no referrer leaving the site, pages not cached (they carry personal data).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HSTS = "max-age=31536000"


def add_headers(headers: MutableHeaders, static: bool = False, secure: bool = False) -> None:
    """Set the security headers on one response's headers."""
    headers["content-security-policy"] = CSP
    headers["x-frame-options"] = "DENY"
    headers["x-content-type-options"] = "nosniff"
    headers["referrer-policy"] = "same-origin"
    headers["cross-origin-opener-policy"] = "same-origin"
    headers["permissions-policy"] = "camera=(), microphone=(), geolocation=()"
    if not static:
        headers["cache-control"] = "no-store"
    if secure:
        headers["strict-transport-security"] = HSTS


class SecurityHeadersMiddleware:
    """Adds the headers to every HTTP response; HSTS only when the request came over TLS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Static files and stored images set their own (long) cache header.
        static = scope.get("path", "").startswith(("/static/", "/media/"))
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_headers(MutableHeaders(scope=message), static=static, secure=secure)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuses a request body over ``limit_bytes`` with 413, before any of it is parsed.

    Paths for which ``is_upload(path)`` is true (the forms that upload an image) may send
    up to ``upload_limit_bytes`` instead.
    """

    def __init__(self, app: ASGIApp, limit_bytes: int, upload_limit_bytes: int = 0,
                 is_upload: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.upload_limit_bytes = max(upload_limit_bytes, limit_bytes)
        self.is_upload = is_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_bytes
        if self.is_upload is not None and scope.get("method") == "POST" and self.is_upload(scope.get("path", "")):
            limit = self.upload_limit_bytes
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send, scope.get("path", "").startswith("/api/"))
            return
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, bounded_receive, send)


class BodyTooLarge(HTTPException):
    """A streamed body grew past the limit (answered 413 by the app's error handler)."""

    def __init__(self) -> None:
        super().__init__(413)


async def _too_large(send: Send, api: bool = False) -> None:
    # The member API speaks problem+json (RFC 9457), pages plain text.
    body, media = ((b'{"type":"https://switchd.dev/problems/body-too-large","title":"Request body too large",'
                    b'"status":413,"detail":"The request body is too large."}', b"application/problem+json")
                   if api else (b"Request body too large\n", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", media),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

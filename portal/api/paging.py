"""Opaque list cursors: the last key of a page, signed so that a client can neither forge nor
alter one, and bound to the list it came from (and to the member, for a member's lists).

>>> c = Cursors(b"k" * 32)
>>> token = c.encode("orders:7", 41)
>>> c.decode("orders:7", token)
41
>>> c.decode("orders:8", token) is None, c.decode("orders:7", token[:-2] + "AA") is None
(True, True)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from starlette.requests import Request

from portal.api.problems import Problem

CURSOR_CHARS_MAX = 200
_TAG_BYTES = 12

Key = int | str


class Cursors:
    """Makes and reads cursors with a key derived from the portal's secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"api-cursor", hashlib.sha256).digest()

    def _tag(self, scope: str, payload: bytes) -> bytes:
        return hmac.new(self._key, scope.encode() + b"|" + payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, scope: str, last: Key) -> str:
        """A cursor for the page after the item whose key is ``last`` in list ``scope``."""
        payload = json.dumps(last, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._tag(scope, payload) + payload).decode().rstrip("=")

    def decode(self, scope: str, cursor: str) -> Key | None:
        """The key a cursor carries, or None when it is not one of ours for ``scope``."""
        if len(cursor) > CURSOR_CHARS_MAX:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            return None
        tag, payload = raw[:_TAG_BYTES], raw[_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(scope, payload)):
            return None
        value = json.loads(payload)
        return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def page_limit(request: Request, default: int, maximum: int) -> int:
    """``?limit=`` (1..maximum), else ``default``; 400 problem when it is not a number in range."""
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text[:6]) <= maximum:
        raise Problem(400, "bad-request", f"limit must be a whole number from 1 to {maximum}.")
    return int(text)


def after_key(request: Request, cursors: Cursors, scope: str) -> Key | None:
    """The key of ``?cursor=`` (None without one); 400 invalid-cursor when it was tampered with."""
    cursor = request.query_params.get("cursor")
    if cursor is None or cursor == "":
        return None
    key = cursors.decode(scope, cursor)
    if key is None:
        raise Problem(400, "invalid-cursor", "The cursor is not one this list gave out.")
    return key

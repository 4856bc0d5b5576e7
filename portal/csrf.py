"""CSRF tokens: one per session for every state-changing form, and one for the login form.

A logged-in form carries the session's token (stored server-side with the session).
The login form has no session yet: the browser gets a random pre-login cookie and
the form carries HMAC(secret, that cookie), so another site can neither read nor
forge the pair. Both are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

FIELD = "csrf_token"
PRELOGIN_COOKIE = "swd_prelogin"


def matches(expected: str, submitted: object) -> bool:
    """True when the submitted token equals the expected one.

    >>> matches("abc", "abc"), matches("abc", "abd"), matches("abc", None)
    (True, False, False)
    """
    return isinstance(submitted, str) and hmac.compare_digest(expected.encode(), submitted.encode())


def new_prelogin_value() -> str:
    """A random value for the pre-login cookie."""
    return secrets.token_urlsafe(32)


def prelogin_token(secret: bytes, cookie_value: str) -> str:
    """The login form's token for a pre-login cookie value."""
    return hmac.new(secret, b"login|" + cookie_value.encode(), hashlib.sha256).hexdigest()

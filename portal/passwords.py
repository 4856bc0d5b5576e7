"""Passwords: argon2id hashes and the minimum policy.

Hashing costs tens of milliseconds of CPU and 64 MiB on purpose; callers run it
in a worker thread (``hash_password_async``) so the event loop keeps serving.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.concurrency import run_in_threadpool

from portal.i18n import N_

PASSWORD_LEN_MIN = 10
PASSWORD_LEN_MAX = 128
_HASHER = PasswordHasher(type=Type.ID)  # RFC 9106 low-memory profile: t=3, m=64 MiB, p=4
# Verified when the login names nobody, so an unknown login costs as much time as a known one.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def policy_problem(password: str, login: str) -> str | None:
    """Why ``password`` is refused (an English sentence, translated by the caller), or None.

    >>> policy_problem("short", "ann"), policy_problem("ann-is-here-1", "ann")
    ('Password must be 10 to 128 characters.', 'Password must not contain the login.')
    >>> policy_problem("aaaaaaaaaaaa", "ann"), policy_problem("correct horse", "ann")
    ('Password must not be one repeated character.', None)
    """
    if not PASSWORD_LEN_MIN <= len(password) <= PASSWORD_LEN_MAX:
        return N_("Password must be 10 to 128 characters.")
    if login and login.lower() in password.lower():
        return N_("Password must not contain the login.")
    if len(set(password)) == 1:
        return N_("Password must not be one repeated character.")
    return None


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (PHC string with its own salt and parameters)."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing or malformed hash is a mismatch, at the same cost."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    """hash_password in a worker thread."""
    return await run_in_threadpool(hash_password, password)


async def verify_password_async(stored_hash: str | None, password: str) -> bool:
    """verify_password in a worker thread."""
    return await run_in_threadpool(verify_password, stored_hash, password)

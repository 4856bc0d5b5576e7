"""Idempotency-Key on every POST that moves value: the first answer is kept per member and key;
the same key with the same request replays it (status and body), with another request it is
refused with 409.

The key also becomes the domain operation's own key (an order's request key in the
mall: portal.api.mall.request_key_of), so a request whose answer was lost to a crash
between the posting and the record here posts nothing twice when the app retries
it: the domain function answers the order it already placed. A first request still being answered blocks a repeat with 409
(``idempotency-key-in-progress``) for ``IN_PROGRESS_STALE_S``; after that the
repeat is let through (the ledger's own idempotency keeps it from posting twice).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from portal.api.problems import Problem

KEY = re.compile(r"^[\x21-\x7e]{1,64}$")
HEADER = "idempotency-key"
IN_PROGRESS_STALE_S = 60.0
BODY_STORED_MAX_BYTES = 65_536
EXPIRED_SWEEP_MAX = 100
SWEEP_ONE_IN = 64  # claims that also sweep expired answers: a bounded cost, spread out


@dataclass(frozen=True)
class Replay:
    """A stored first answer."""

    status: int
    body: bytes


def request_hash(method: str, path: str, body: Any) -> bytes:
    """What makes two requests "the same": method, path and the JSON body (keys sorted).

    >>> request_hash("POST", "/x", {"a": 1, "b": 2}) == request_hash("POST", "/x", {"b": 2, "a": 1})
    True
    """
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


def key_of(header: str | None) -> str:
    """The request's Idempotency-Key; a 400 problem when absent or malformed."""
    if header is None:
        raise Problem(400, "idempotency-key-required",
                      "This request moves value: send an Idempotency-Key header (1 to 64 printable characters).")
    if not KEY.match(header):
        raise Problem(400, "idempotency-key-required",
                      "The Idempotency-Key must be 1 to 64 printable ASCII characters without spaces.")
    return header


async def begin(pool: asyncpg.Pool, member_id: int, key: str, req_hash: bytes, ttl_s: int) -> Replay | None:
    """Claim ``key`` for this request: None when it is ours to answer, a Replay when it was answered
    before; 409 problem when the key was used for another request or is still being answered.

    One statement in the usual case (a new key); every step is a compare-and-set, so two
    requests racing for one key cannot both claim it.
    """
    claimed = await pool.fetchval(
        "INSERT INTO portal.api_idempotency AS i (member_id, idempotency_key, request_hash, expires_at) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4)) "
        "ON CONFLICT (member_id, idempotency_key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
        "status = NULL, body = NULL, created_at = now(), expires_at = EXCLUDED.expires_at "
        "WHERE i.expires_at < now() RETURNING 1", member_id, key, req_hash, float(ttl_s))
    if claimed:
        if secrets.randbelow(SWEEP_ONE_IN) == 0:  # expired answers go now and then, a bounded batch
            await pool.execute(
                "DELETE FROM portal.api_idempotency WHERE (member_id, idempotency_key) IN (SELECT member_id, "
                "idempotency_key FROM portal.api_idempotency WHERE expires_at < now() LIMIT $1)", EXPIRED_SWEEP_MAX)
        return None
    row = await pool.fetchrow(
        "SELECT request_hash, status, body FROM portal.api_idempotency WHERE member_id = $1 AND idempotency_key = $2",
        member_id, key)
    if row is None:  # swept between the two statements: try again, once
        return await begin(pool, member_id, key, req_hash, ttl_s)
    if bytes(row["request_hash"]) != req_hash:
        raise Problem(409, "idempotency-key-reused",
                      "This Idempotency-Key was used for a different request; use a new key.")
    if row["status"] is not None:
        return Replay(int(row["status"]), bytes(row["body"] or b""))
    retaken = await pool.fetchval(
        "UPDATE portal.api_idempotency SET created_at = now() WHERE member_id = $1 AND idempotency_key = $2 "
        "AND status IS NULL AND created_at < now() - make_interval(secs => $3) RETURNING 1",
        member_id, key, IN_PROGRESS_STALE_S)
    if not retaken:
        raise Problem(409, "idempotency-key-in-progress",
                      "The first request with this Idempotency-Key is still being answered; retry later.",
                      {"retry-after": "1"})
    return None


async def finish(pool: asyncpg.Pool, member_id: int, key: str, status: int, body: bytes) -> None:
    """Keep the answer to replay it. Server errors are not kept: the key is released, so that a
    retry is answered afresh (the ledger key keeps it from posting twice)."""
    if status >= 500 or len(body) > BODY_STORED_MAX_BYTES:
        await release(pool, member_id, key)
        return
    await pool.execute("UPDATE portal.api_idempotency SET status = $3, body = $4 "
                       "WHERE member_id = $1 AND idempotency_key = $2", member_id, key, status, body)


async def release(pool: asyncpg.Pool, member_id: int, key: str) -> None:
    """Forget a claimed key whose request ended without an answer worth keeping."""
    await pool.execute("DELETE FROM portal.api_idempotency WHERE member_id = $1 AND idempotency_key = $2 "
                       "AND status IS NULL", member_id, key)

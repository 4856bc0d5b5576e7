"""Idempotency-Key on every POST that moves value: the first answer is kept per member and key;
the same key with the same request replays it (status and body), with another request it is
refused with 409.

The key also names the ledger operation the request starts (``ledger_key``), so a
request whose answer was lost to a crash between the posting and the record here
posts nothing twice when the app retries it: the domain function replays its own
result. A first request still being answered blocks a repeat with 409
(``idempotency-key-in-progress``) for ``IN_PROGRESS_STALE_S``; after that the
repeat is let through (the ledger's own idempotency keeps it from posting twice).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from portal.api.problems import Problem

KEY = re.compile(r"^[\x21-\x7e]{1,64}$")
HEADER = "idempotency-key"
IN_PROGRESS_STALE_S = 60.0
BODY_STORED_MAX_BYTES = 65_536
EXPIRED_SWEEP_MAX = 100


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


def ledger_key(member_id: int, key: str) -> str:
    """The idempotency key of the ledger operation a keyed request starts.

    >>> ledger_key(7, "abc")
    'api:7:abc'
    """
    return f"api:{member_id}:{key}"


async def begin(pool: asyncpg.Pool, member_id: int, key: str, req_hash: bytes, ttl_s: int) -> Replay | None:
    """Claim ``key`` for this request: None when it is ours to answer, a Replay when it was answered
    before; 409 problem when the key was used for another request or is still being answered."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM portal.api_idempotency WHERE (member_id, idempotency_key) IN (SELECT member_id, "
            "idempotency_key FROM portal.api_idempotency WHERE expires_at < now() LIMIT $1)", EXPIRED_SWEEP_MAX)
        claimed = await conn.fetchval(
            "INSERT INTO portal.api_idempotency(member_id, idempotency_key, request_hash, expires_at) "
            "VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT DO NOTHING RETURNING 1",
            member_id, key, req_hash, float(ttl_s))
        if claimed:
            return None
        row = await conn.fetchrow(
            "SELECT request_hash, status, body, created_at < now() - make_interval(secs => $3) AS stale "
            "FROM portal.api_idempotency WHERE member_id = $1 AND idempotency_key = $2 FOR UPDATE",
            member_id, key, IN_PROGRESS_STALE_S)
        if row is None:  # expired and swept between the two statements: ours after all
            await conn.execute(
                "INSERT INTO portal.api_idempotency(member_id, idempotency_key, request_hash, expires_at) "
                "VALUES ($1, $2, $3, now() + make_interval(secs => $4))", member_id, key, req_hash, float(ttl_s))
            return None
        if bytes(row["request_hash"]) != req_hash:
            raise Problem(409, "idempotency-key-reused",
                          "This Idempotency-Key was used for a different request; use a new key.")
        if row["status"] is not None:
            return Replay(int(row["status"]), bytes(row["body"] or b""))
        if not row["stale"]:
            raise Problem(409, "idempotency-key-in-progress",
                          "The first request with this Idempotency-Key is still being answered; retry later.",
                          {"retry-after": "1"})
        await conn.execute("UPDATE portal.api_idempotency SET created_at = now() "
                           "WHERE member_id = $1 AND idempotency_key = $2", member_id, key)
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

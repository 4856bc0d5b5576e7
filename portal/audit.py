"""The audit log: who changed what, when, and the object before and after.

Written in the same transaction as the change it describes, so the log never
claims a change that did not happen nor misses one that did.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

# Never copied into the log, whatever object they appear in.
SECRET_KEYS = frozenset({"password", "password_hash", "csrf_token", "pan", "pin", "key"})


def _jsonable(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy fit for jsonb: secrets dropped, timestamps as ISO text.

    >>> _jsonable({"name": "A", "password_hash": "x", "at": dt.date(2024, 1, 2)})
    {'name': 'A', 'at': '2024-01-02'}
    """
    if obj is None:
        return None
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in SECRET_KEYS:
            continue
        out[k] = v.isoformat() if isinstance(v, dt.date | dt.datetime) else v
    return out


async def record(conn: asyncpg.Connection, actor: str, user_id: int | None, action: str, object_kind: str,
                 object_id: str, merchant_id: str | None, before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> None:
    """Append one entry: ``actor`` is who (``portal:LOGIN`` or ``cli:USER``)."""
    await conn.execute(
        "INSERT INTO portal.audit(actor, user_id, action, object_kind, object_id, merchant_id, before, after) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        actor[:100], user_id, action, object_kind, str(object_id)[:64], merchant_id, _jsonable(before),
        _jsonable(after))

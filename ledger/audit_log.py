"""The audit log: who changed what, when, and the object before and after.

Every change made through the portal or the CLI appends one entry, in the same
transaction as the change it describes, so the log never claims a change that
did not happen nor misses one that did. The table (``portal.audit``) is the
schema's like any other; the portal and the CLI both write it through here.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Any

import asyncpg

# Never copied into the log, whatever object they appear in.
SECRET_KEYS = frozenset({"password", "password_hash", "csrf_token", "pan", "pin", "key", "mac_key"})
ACTOR_CHARS_MAX = 100
OBJECT_ID_CHARS_MAX = 64


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


def cli_actor() -> str:
    """How the log names a CLI change: ``cli:<operating-system user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a container's bare uid
        user = "unknown"
    return f"cli:{user}"


async def record(conn: asyncpg.Connection, actor: str, user_id: int | None, action: str, object_kind: str,
                 object_id: str, merchant_id: str | None, before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> None:
    """Append one entry: ``actor`` is who (``portal:LOGIN`` or ``cli:USER``), ``user_id`` the portal user."""
    await conn.execute(
        "INSERT INTO portal.audit(actor, user_id, action, object_kind, object_id, merchant_id, before, after) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        actor[:ACTOR_CHARS_MAX], user_id, action, object_kind, str(object_id)[:OBJECT_ID_CHARS_MAX], merchant_id,
        _jsonable(before), _jsonable(after))

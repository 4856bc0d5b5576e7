"""The CLI's audit entries: every changing command appends one, in its own transaction.

The actor is ``cli:<operating-system user>``; before and after are the changed
object's fields that an operator sets (never a key, a PIN or a full PAN).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from ledger import audit_log


def fields(row: Mapping[str, Any] | None, names: Iterable[str]) -> dict[str, Any] | None:
    """The ``names`` of ``row`` (None stays None: the object did not exist)."""
    if row is None:
        return None
    return {name: row[name] for name in names if name in row}


async def audit(conn: asyncpg.Connection, action: str, object_kind: str, object_id: str,
                before: dict[str, Any] | None, after: dict[str, Any] | None, merchant_id: str | None = None) -> None:
    """Append the entry for one CLI change (call it inside the change's transaction)."""
    await audit_log.record(conn, audit_log.cli_actor(), None, action, object_kind, object_id, merchant_id,
                           before, after)

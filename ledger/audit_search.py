"""Search the audit log (portal.audit, written by the portal and the CLI): who, what, which
object, which merchant, when; newest first in keyset pages; before and after as JSON text."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, fields
from typing import Any

import asyncpg

PAGE_SIZE_MAX = 200


@dataclass(frozen=True)
class AuditFilters:
    """Audit search criteria; None = any. ``actor`` and ``action`` match a prefix."""

    actor: str | None = None
    action: str | None = None
    object_kind: str | None = None
    object_id: str | None = None
    merchant_id: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    before_id: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause over portal.audit and its parameters (dates are UTC days).

        >>> AuditFilters(actor="portal:ad", date_to=dt.date(2024, 1, 2)).where()[0]
        "starts_with(actor, $1) AND at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'"
        """
        clauses = {
            "actor": "starts_with(actor, ${})", "action": "starts_with(action, ${})",
            "object_kind": "object_kind = ${}", "object_id": "object_id = ${}", "merchant_id": "merchant_id = ${}",
            "date_from": "at >= ${}::date::timestamp AT TIME ZONE 'UTC'",
            "date_to": "at < (${}::date + 1)::timestamp AT TIME ZONE 'UTC'", "before_id": "id < ${}",
        }
        parts: list[str] = []
        args: list[Any] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            args.append(value)
            parts.append(clauses[f.name].format(len(args)))
        return (" AND ".join(parts) or "true"), args


async def search(conn: asyncpg.Connection | asyncpg.Pool, filters: AuditFilters, limit: int = 50
                 ) -> dict[str, Any]:
    """One page of entries, newest first (keyset on id), and the cursor for the next page."""
    limit = max(1, min(int(limit), PAGE_SIZE_MAX))
    where, args = filters.where()
    rows = await conn.fetch(
        "SELECT id, at, actor, user_id, action, object_kind, object_id, merchant_id, before::text AS before, "
        f"after::text AS after FROM portal.audit WHERE {where} ORDER BY id DESC LIMIT {limit + 1}", *args)
    entries = []
    for r in rows[:limit]:
        e = dict(r)
        for k in ("before", "after"):
            e[k] = json.dumps(json.loads(e[k]), indent=1, sort_keys=True, ensure_ascii=False) if e[k] else None
        entries.append(e)
    return {"entries": entries, "count": len(entries),
            "next_before_id": entries[-1]["id"] if len(rows) > limit else None}

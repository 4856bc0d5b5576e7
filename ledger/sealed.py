"""Every column that holds a blob sealed under the master key, and their re-sealing under a new one.

:data:`SEALED_COLUMNS` is the one registry: a table, its key column, the sealed column, the
columns the associated data is made of and how (``aad``). ``switchd keys rewrap`` walks it; a new
sealed column is one more entry here.

Re-sealing (:func:`rewrap`) is resumable and re-seals each blob exactly once: a blob that already
opens under the new key is left alone, and each new blob replaces the old one only if the row
still holds that old blob (compare and set), so a blob written meanwhile (a sign-on's working
keys) is read again, not overwritten. Nothing here prints or logs a key.

>>> [c.name for c in SEALED_COLUMNS]
['switch.terminals.mac_key_sealed', 'switch.terminals.tmk_sealed', 'switch.terminals.pin_key_sealed', 'loyalty.pin_keys.key_sealed', 'loyalty.card_keys.sealed_data_key', 'loyalty.card_keys.sealed_lookup_key']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger import keys
from ledger.loyalty import card_numbers
from ledger.terminals import key_aad, scheme_aad

REWRAP_PAGE_ROWS = 500
REWRAP_ROW_RETRIES_MAX = 10  # a row whose blob keeps changing under us (sign-ons) is tried this often
PIN_KEY_AAD = b"switchd:loyalty:pin_key:1"


@dataclass(frozen=True)
class SealedColumn:
    """One sealed column: ``aad(row)`` is the associated data its blobs were sealed with."""

    table: str
    key_column: str
    blob_column: str
    aad_columns: tuple[str, ...]
    aad: Callable[[Mapping[str, Any]], bytes]

    @property
    def name(self) -> str:
        return f"{self.table}.{self.blob_column}"


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn("switch.terminals", "terminal_id", "mac_key_sealed", ("mac_alg",),
                 lambda r: key_aad(r["terminal_id"], r["mac_alg"])),
    SealedColumn("switch.terminals", "terminal_id", "tmk_sealed", ("tmk_alg",),
                 lambda r: scheme_aad(r["terminal_id"], "tmk", r["tmk_alg"])),
    SealedColumn("switch.terminals", "terminal_id", "pin_key_sealed", ("pin_alg",),
                 lambda r: scheme_aad(r["terminal_id"], "pin", r["pin_alg"])),
    SealedColumn("loyalty.pin_keys", "id", "key_sealed", (), lambda _r: PIN_KEY_AAD),
    SealedColumn("loyalty.card_keys", "id", "sealed_data_key", (), lambda _r: card_numbers.AAD_DATA_KEY),
    SealedColumn("loyalty.card_keys", "id", "sealed_lookup_key", (), lambda _r: card_numbers.AAD_LOOKUP_KEY),
)


@dataclass
class RewrapCount:
    """What one sealed column's pass did."""

    name: str
    resealed: int = 0
    already: int = 0  # already sealed under the new key (an earlier, interrupted run)


def _select(col: SealedColumn, one: bool) -> str:
    # Names come from the registry above, never from input.
    columns = ", ".join((col.key_column, *col.aad_columns, col.blob_column))
    where = f"{col.key_column} = $1" if one else f"($1::text IS NULL OR {col.key_column}::text > $1)"
    order = "" if one else f" ORDER BY {col.key_column}::text LIMIT $2"
    return f"SELECT {columns} FROM {col.table} WHERE {col.blob_column} IS NOT NULL AND {where}{order}"


async def _reseal_row(conn: asyncpg.Connection, col: SealedColumn, row: Mapping[str, Any],
                      old_keys: tuple[bytes, ...], new_key: bytes, count: RewrapCount) -> None:
    for _ in range(REWRAP_ROW_RETRIES_MAX):
        blob = bytes(row[col.blob_column])
        aad = col.aad(row)
        try:
            keys.unseal(new_key, blob, aad)
            count.already += 1
            return
        except keys.KeyStoreError:
            pass
        try:
            plain = keys.unseal_any(old_keys, blob, aad)
        except keys.KeyStoreError:
            raise keys.KeyStoreError(f"rewrap: {col.name} of {row[col.key_column]} opens under none of the "
                                     "configured master keys nor the new one") from None
        status = await conn.execute(
            f"UPDATE {col.table} SET {col.blob_column} = $2 WHERE {col.key_column} = $1 AND {col.blob_column} = $3",
            row[col.key_column], keys.seal(new_key, plain, aad), blob)
        if status.endswith(" 1"):
            count.resealed += 1
            return
        # Changed since we read it (a sign-on installed new working keys): read it again.
        fresh = await conn.fetchrow(_select(col, one=True), row[col.key_column])
        if fresh is None:
            return
        row = fresh
    raise keys.KeyStoreError(f"rewrap: {col.name} of {row[col.key_column]} kept changing; run the command again")


async def rewrap(conn: asyncpg.Connection, old_keys: tuple[bytes, ...], new_key: bytes,
                 progress: Callable[[RewrapCount], None] | None = None,
                 columns: tuple[SealedColumn, ...] = SEALED_COLUMNS) -> list[RewrapCount]:
    """Re-seal every blob of ``columns`` under ``new_key``; blobs open under ``old_keys`` or ``new_key``.

    Each row is its own statement (autocommit): an interrupted run keeps what it did, and the next
    run skips it. ``progress`` is called after each page.
    """
    counts = []
    for col in columns:
        count = RewrapCount(col.name)
        after: str | None = None
        while True:
            rows = await conn.fetch(_select(col, one=False), after, REWRAP_PAGE_ROWS)
            if not rows:
                break
            for row in rows:
                await _reseal_row(conn, col, row, old_keys, new_key, count)
            after = str(rows[-1][col.key_column])
            if progress is not None:
                progress(count)
        counts.append(count)
    return counts

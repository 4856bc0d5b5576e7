"""The platform's card BIN prefixes (``loyalty.bin_ranges``): a card is issued only inside one.

A BIN is a prefix of 4..11 digits. A range ``LOW-HIGH`` (prefixes of one length)
is stored as the fewest prefixes that cover exactly it. No stored prefix may
contain another: each card number falls in at most one. Removing a prefix
stops new cards in it; cards already issued keep working.

>>> parse_bins("621234"), parse_bins("621230-621239"), parse_bins("621200-621399")
(['621234'], ['62123'], ['6212', '6213'])
>>> parse_bins("621234-621236")
['621234', '621235', '621236']
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ledger.loyalty.programs import ProvisioningError

PREFIX_DIGITS_MIN = 4  # the table's CHECK
PREFIX_DIGITS_MAX = 11
PREFIXES_PER_RANGE_MAX = 100
DESCRIPTION_CHARS_MAX = 80


class BinError(ProvisioningError):
    """A BIN refused (syntax, overlap, duplicate); ``str()`` is one line."""


class BinNotFound(BinError):
    """A BIN to remove is not there."""


def _digits(text: str) -> str:
    if not (text.isascii() and text.isdigit()) or not PREFIX_DIGITS_MIN <= len(text) <= PREFIX_DIGITS_MAX:
        raise BinError(f"BIN must be {PREFIX_DIGITS_MIN}..{PREFIX_DIGITS_MAX} digits, got {text!r}")
    return text


def parse_bins(text: str) -> list[str]:
    """The prefixes of ``PREFIX`` or ``LOW-HIGH`` (both ends included); BinError when malformed."""
    low_text, dash, high_text = text.strip().partition("-")
    low = _digits(low_text.strip())
    if not dash:
        return [low]
    high = _digits(high_text.strip())
    if len(low) != len(high):
        raise BinError(f"a BIN range's ends must have as many digits, got {low}-{high}")
    if low > high:
        raise BinError(f"a BIN range must go from low to high, got {low}-{high}")
    width = len(low)
    lo, hi = int(low), int(high)
    out: list[str] = []
    while lo <= hi:
        if len(out) == PREFIXES_PER_RANGE_MAX:
            raise BinError(f"BIN range {low}-{high} needs more than {PREFIXES_PER_RANGE_MAX} prefixes")
        # The widest block starting at lo that stays inside the range (and a valid prefix).
        drop = 0
        while (width - drop > PREFIX_DIGITS_MIN and lo % 10 ** (drop + 1) == 0
               and lo + 10 ** (drop + 1) - 1 <= hi):
            drop += 1
        out.append(str(lo // 10**drop).zfill(width - drop))
        lo += 10**drop
    return out


async def add_bins(conn: asyncpg.Connection, text: str, description: str = "") -> list[str]:
    """Add the prefixes of ``text`` (see parse_bins); BinError when one overlaps a stored BIN."""
    prefixes = parse_bins(text)
    if len(description) > DESCRIPTION_CHARS_MAX:
        raise BinError(f"description must be at most {DESCRIPTION_CHARS_MAX} characters")
    async with conn.transaction():
        # Two adds at once must not both pass the overlap check; card issuing (reads) goes on.
        await conn.execute("LOCK TABLE loyalty.bin_ranges IN SHARE ROW EXCLUSIVE MODE")
        for prefix in prefixes:
            # Digits only, so LIKE has no wildcard but the one appended.
            clash = await conn.fetchval(
                "SELECT prefix FROM loyalty.bin_ranges WHERE $1 LIKE prefix || '%' OR prefix LIKE $1 || '%' "
                "ORDER BY prefix LIMIT 1", prefix)
            if clash == prefix:
                raise BinError(f"BIN {prefix} already exists")
            if clash is not None:
                raise BinError(f"BIN {prefix} overlaps BIN {clash}")
        await conn.executemany("INSERT INTO loyalty.bin_ranges(prefix, description) VALUES ($1, $2)",
                               [(p, description) for p in prefixes])
    return prefixes


async def list_bins(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """Every BIN prefix with its description, in prefix order."""
    rows = await conn.fetch("SELECT prefix, description FROM loyalty.bin_ranges ORDER BY prefix")
    return [dict(r) for r in rows]


async def remove_bins(conn: asyncpg.Connection, text: str) -> list[str]:
    """Remove exactly the prefixes of ``text``: all of them, or none (BinNotFound naming the first missing)."""
    prefixes = parse_bins(text)
    async with conn.transaction():
        removed = {r["prefix"] for r in await conn.fetch(
            "DELETE FROM loyalty.bin_ranges WHERE prefix = ANY($1::text[]) RETURNING prefix", prefixes)}
        missing = [p for p in prefixes if p not in removed]
        if missing:
            near = await conn.fetchval(
                "SELECT prefix FROM loyalty.bin_ranges WHERE $1 LIKE prefix || '%' OR prefix LIKE $1 || '%' "
                "ORDER BY prefix LIMIT 1", missing[0])
            raise BinNotFound(f"no BIN {missing[0]}" + (f" (BIN {near} overlaps it)" if near else ""))
    return prefixes

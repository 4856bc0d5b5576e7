"""Exchange rates between programs' points: published with an effective time, history kept.

A rate says how many points of program ``to`` one point of program ``from`` is worth, as
the rational ``rate_num / rate_den``, and what the exchange keeps as its fee, in basis
points of the converted points. Rates are never changed: setting one adds a row. The rate
in force for a pair is the row whose ``effective_from`` is the latest not in the future
(ties: the one set last); a rate may be published ahead of time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.errors import SwitchdError

RATE_TERM_MAX = 1_000_000_000  # numerator and denominator bound (the table's CHECK)
FEE_BPS_MAX = 10_000
HISTORY_ROWS_MAX = 500
TABLE_ROWS_MAX = 1_000
CREATED_BY_LENGTH_MAX = 100

_COLUMNS = ("r.id, r.from_program, r.to_program, r.rate_num, r.rate_den, r.fee_bps, r.effective_from, "
            "r.created_at, r.created_by")

# The rate in force per pair at $1: the latest effective time not after it.
_CURRENT_SQL = f"""
SELECT DISTINCT ON (r.from_program, r.to_program) {_COLUMNS}
  FROM loyalty.exchange_rates r
 WHERE r.effective_from <= $1
   AND ($2::text IS NULL OR r.from_program = $2) AND ($3::text IS NULL OR r.to_program = $3)
 ORDER BY r.from_program, r.to_program, r.effective_from DESC, r.id DESC
"""


class RateError(SwitchdError):
    """A rate cannot be set as asked; ``str()`` says why in one line."""


@dataclass(frozen=True)
class Rate:
    """One published rate: ``rate_num/rate_den`` points of ``to_program`` per point of ``from_program``."""

    id: int
    from_program: str
    to_program: str
    rate_num: int
    rate_den: int
    fee_bps: int
    effective_from: dt.datetime
    created_at: dt.datetime
    created_by: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (times in ISO 8601)."""
        return {"id": self.id, "from_program": self.from_program, "to_program": self.to_program,
                "rate_num": self.rate_num, "rate_den": self.rate_den, "fee_bps": self.fee_bps,
                "effective_from": self.effective_from.isoformat(), "created_at": self.created_at.isoformat(),
                "created_by": self.created_by}


def convert(points: int, rate_num: int, rate_den: int, fee_bps: int) -> tuple[int, int, int]:
    """(gross, fee, net) points of the target for ``points`` of the source, each floored.

    gross = floor(points x num / den); fee = floor(gross x fee_bps / 10000); net = gross - fee.

    >>> convert(1000, 3, 2, 0), convert(999, 1, 10, 250), convert(7, 1, 10, 0)
    ((1500, 0, 1500), (99, 2, 97), (0, 0, 0))
    """
    gross = points * rate_num // rate_den
    fee = gross * fee_bps // 10_000
    return gross, fee, gross - fee


def _rate(row: asyncpg.Record) -> Rate:
    return Rate(**dict(row))


def check_terms(rate_num: int, rate_den: int, fee_bps: int) -> None:
    """RateError naming the first term out of its bounds.

    >>> check_terms(1, 0, 0)
    Traceback (most recent call last):
    ...
    ledger.loyalty.rates.RateError: the denominator must be 1..1000000000, got 0
    """
    for name, value, low in (("numerator", rate_num, 0), ("denominator", rate_den, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= RATE_TERM_MAX:
            raise RateError(f"the {name} must be {low}..{RATE_TERM_MAX}, got {value!r}")
    if not isinstance(fee_bps, int) or isinstance(fee_bps, bool) or not 0 <= fee_bps <= FEE_BPS_MAX:
        raise RateError(f"the fee must be 0..{FEE_BPS_MAX} basis points, got {fee_bps!r}")


async def set_rate(conn: asyncpg.Connection | asyncpg.Pool, from_program: str, to_program: str, rate_num: int,
                   rate_den: int, fee_bps: int = 0, effective_from: dt.datetime | None = None,
                   created_by: str = "cli") -> Rate:
    """Publish a rate (a new row; history is kept), effective now or from ``effective_from``.

    Both programs must exist and share a currency (clearing values points in it).
    """
    check_terms(rate_num, rate_den, fee_bps)
    if from_program == to_program:
        raise RateError("a rate is between two different programs")
    if not 1 <= len(created_by) <= CREATED_BY_LENGTH_MAX:
        raise RateError(f"created_by must be 1..{CREATED_BY_LENGTH_MAX} characters")
    if effective_from is not None and effective_from.tzinfo is None:
        raise RateError("the effective time must carry its time zone")
    rows = await conn.fetch("SELECT code, currency FROM loyalty.programs WHERE code = ANY($1::text[])",
                            [from_program, to_program])
    found = {r["code"]: r["currency"] for r in rows}
    for code in (from_program, to_program):
        if code not in found:
            raise RateError(f"no program {code!r}")
    if found[from_program] != found[to_program]:
        raise RateError(f"programs {from_program} and {to_program} have different currencies")
    row = await conn.fetchrow(
        "INSERT INTO loyalty.exchange_rates(from_program, to_program, rate_num, rate_den, fee_bps, effective_from, "
        "created_by) VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7) "
        f"RETURNING {_COLUMNS.replace('r.', '')}",
        from_program, to_program, rate_num, rate_den, fee_bps, effective_from, created_by)
    return _rate(row)


async def current(conn: asyncpg.Connection | asyncpg.Pool, at: dt.datetime | None = None,
                  from_program: str | None = None, to_program: str | None = None) -> list[Rate]:
    """The rates in force at ``at`` (default now), one per pair, by (from, to); at most TABLE_ROWS_MAX."""
    when = at or dt.datetime.now(dt.UTC)
    rows = await conn.fetch(_CURRENT_SQL + f" LIMIT {TABLE_ROWS_MAX}", when, from_program, to_program)
    return [_rate(r) for r in rows]


async def in_force(conn: asyncpg.Connection | asyncpg.Pool, from_program: str, to_program: str,
                   at: dt.datetime | None = None) -> Rate | None:
    """The rate in force for one pair at ``at`` (default now), or None."""
    found = await current(conn, at, from_program, to_program)
    return found[0] if found else None


async def history(conn: asyncpg.Connection | asyncpg.Pool, from_program: str | None = None,
                  to_program: str | None = None, limit: int = 100) -> list[Rate]:
    """Every rate published (future ones included), newest effective time first, at most ``limit``."""
    limit = max(1, min(int(limit), HISTORY_ROWS_MAX))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM loyalty.exchange_rates r "
        "WHERE ($1::text IS NULL OR r.from_program = $1) AND ($2::text IS NULL OR r.to_program = $2) "
        f"ORDER BY r.effective_from DESC, r.id DESC LIMIT {limit}", from_program, to_program)
    return [_rate(r) for r in rows]

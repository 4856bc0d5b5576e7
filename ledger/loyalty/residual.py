"""Stored-value residual value: what members leave on cards that have expired.

A card expires at the end of its expiry month (``loyalty.cards.expiry``, YYMM). Its stored value
belongs to the program of the merchant that last loaded it; that program's policy decides:
``liability`` (the default) keeps it owed to the member; ``breakage`` moves what is available
``residual_grace_days`` days after the expiry month ends to the operator's stored-value breakage
income (``operator:<CUR>:sv_breakage``), at end of day, once per card (:func:`move_day`).
:func:`residual_list` is what ``switchd card residual`` shows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.accounts import open_account

RESIDUAL_CARDS_PER_JOURNAL = 10_000  # 20,000 legs, within a journal's 32,767
LIST_ROWS_MAX = 10_000
BREAKAGE_PURPOSE = "sv_breakage"


@dataclass(frozen=True)
class ProgramResidual:
    """What end of day moved to breakage in one program."""

    program: str
    amount_minor: int
    cards: int
    journals_posted: int
    journals_existing: int


def residual_key(day: dt.date, program: str, part: int) -> str:
    """The idempotency key of part ``part`` of a program's residual-value journal for ``day``.

    >>> residual_key(dt.date(2027, 3, 1), "ALLY", 1)
    'residual:2027-03-01:ALLY:1'
    """
    return f"residual:{day.isoformat()}:{program}:{part}"


async def breakage_account(conn: asyncpg.Connection | asyncpg.Pool, money_asset: str) -> int:
    """The operator's stored-value breakage account in ``money_asset`` (opened on first use)."""
    return await open_account(conn, "operator", money_asset, money_asset, "credit", "none", BREAKAGE_PURPOSE)


async def move_day(conn: asyncpg.Connection, day: dt.date,
                   cards_per_journal: int = RESIDUAL_CARDS_PER_JOURNAL) -> list[ProgramResidual]:
    """Move the residual stored value due on ``day`` to breakage, per program with that policy; idempotent."""
    out: list[ProgramResidual] = []
    rows = await conn.fetch(
        "SELECT p.code, p.residual_grace_days, c.asset FROM loyalty.programs p "
        "JOIN loyalty.currencies c ON c.numeric_code = p.currency "
        "WHERE p.residual_policy = 'breakage' ORDER BY p.code")
    for r in rows:
        breakage = await breakage_account(conn, r["asset"])
        amount = cards = posted = existing = 0
        part = 1
        while True:
            got = await conn.fetchrow("SELECT * FROM loyalty.move_residual($1, $2, $3, $4, $5, $6)",
                                      r["code"], day, r["residual_grace_days"],
                                      residual_key(day, r["code"], part), breakage, cards_per_journal)
            if got is None or got["journal_id"] is None:
                break
            amount += int(got["amount_minor"])
            cards += int(got["cards"])
            existing += 1 if got["existed"] else 0
            posted += 0 if got["existed"] else 1
            part += 1
        out.append(ProgramResidual(r["code"], amount, cards, posted, existing))
    return out


_LIST_SQL = """
SELECT c.id AS card_id, c.expiry, lp.program, p.residual_policy, p.residual_grace_days,
       (make_date(2000 + left(c.expiry, 2)::integer, right(c.expiry, 2)::integer, 1)
        + make_interval(months => 1, days => p.residual_grace_days - 1))::date AS due_on,
       sa.posted AS stored_value_minor, rb.amount_minor AS moved_minor, rb.business_date AS moved_on,
       rb.journal_id AS moved_journal_id
  FROM loyalty.cards c
  JOIN LATERAL (SELECT t.program FROM loyalty.transactions t
                 WHERE t.card_id = c.id AND t.txn_type = 'load' AND t.journal_id IS NOT NULL
                 ORDER BY t.id DESC LIMIT 1) lp ON true
  JOIN loyalty.programs p ON p.code = lp.program
  JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  JOIN ledger.accounts sa ON sa.owner_kind = 'card' AND sa.owner_id = c.id::text
                         AND sa.purpose = 'stored_value' AND sa.asset = cur.asset
  LEFT JOIN loyalty.residual_breakage rb ON rb.card_id = c.id
 WHERE c.expiry IS NOT NULL
   AND make_date(2000 + left(c.expiry, 2)::integer, right(c.expiry, 2)::integer, 1)
       + interval '1 month' <= $1::date
   AND (sa.posted <> 0 OR rb.card_id IS NOT NULL)
 ORDER BY c.id
 LIMIT $2
"""


async def residual_list(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date,
                        rows_max: int = LIST_ROWS_MAX) -> list[dict[str, Any]]:
    """Expired cards (as of ``day``) that hold or held stored value, each with its state.

    ``state``: ``moved`` (to breakage, with the amount and the day), ``grace`` (policy breakage,
    not due yet), ``liability`` (the program keeps it owed to the member).
    """
    out = []
    for r in await conn.fetch(_LIST_SQL, day, rows_max):
        row = dict(r)
        if row["moved_minor"] is not None:
            row["state"] = "moved"
        elif row["residual_policy"] == "breakage":
            row["state"] = "grace" if row["due_on"] > day else "due"
        else:
            row["state"] = "liability"
        out.append(row)
    return out

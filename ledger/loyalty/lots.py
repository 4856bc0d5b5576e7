"""Points expiry: lots of members' points, and the end of day's expiry journals.

A program with ``points_expiry_months`` N keeps every member account's points in lots, one per
expiry date. The database keeps them with every posting (``ledger/sql/loyalty.move_lots.sql``,
called by a trigger on ``ledger.entries``); :class:`LotBook` is the same rule in Python, the
oracle of the property tests and the state machines:

- a credit pays the debt lot first, then goes to the lot expiring N months after its business
  day;
- a debit takes the live lots oldest expiry first; what no lot holds (a claw-back of points
  already spent) becomes the debt lot, negative;
- a compensation (void, refund, reversal) first undoes what its original did to the account's
  lots and is not undone yet: points the original took go back to the lots they came from,
  latest expiry first; points it credited are taken out of their lots as far as those still
  hold them (what it paid of the debt is owed again); the rest follows the two rules above.

End of day (:func:`expire_day`) moves every live lot expiring on or before the closed day to
the operator's points breakage account, one journal per program (in parts of
``EXPIRY_ACCOUNTS_PER_JOURNAL`` accounts: a journal's legs are numbered in 16 bits).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg

from ledger.accounts import open_account
from ledger.loyalty.programs import ProvisioningError

DEBT_ON = dt.date(9999, 12, 31)  # the debt lot's date: never expires, always the last
EXPIRY_ACCOUNTS_PER_JOURNAL = 10_000  # 20,000 legs, within a journal's 32,767
EXPIRY_MONTHS_MAX = 600
RESIDUAL_POLICIES = ("liability", "breakage")
RESIDUAL_GRACE_DAYS_MAX = 3650
BREAKAGE_PURPOSE = "breakage"


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus whole months, the day clamped to the month's last (as PostgreSQL does).

    >>> add_months(dt.date(2026, 1, 31), 1)
    datetime.date(2026, 2, 28)
    >>> add_months(dt.date(2026, 11, 15), 14)
    datetime.date(2028, 1, 15)
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))


@dataclass(frozen=True)
class Move:
    """One change of one lot: ``amount`` (signed) by ``journal``, part of undoing ``undoes`` or not."""

    journal: int
    account: int
    expires_on: dt.date
    amount: int
    undoes: int | None


@dataclass
class LotBook:
    """Lots of member accounts, kept by the rule of the database (the tests' oracle).

    >>> book = LotBook()
    >>> _ = book.apply(1, 7, 100, dt.date(2027, 1, 1))
    >>> _ = book.apply(2, 7, 30, dt.date(2027, 2, 1))
    >>> _ = book.apply(3, 7, -110, dt.date(2027, 2, 1))
    >>> book.live(7)
    [(datetime.date(2027, 2, 1), 20)]
    >>> _ = book.apply(4, 7, 50, dt.date(2027, 2, 1), undoes=3)   # a partial refund of the redeem
    >>> book.live(7)
    [(datetime.date(2027, 1, 1), 40), (datetime.date(2027, 2, 1), 30)]
    """

    lots: dict[int, dict[dt.date, int]] = field(default_factory=lambda: defaultdict(dict))
    moves: list[Move] = field(default_factory=list)

    def _add(self, journal: int, account: int, expires_on: dt.date, amount: int, undoes: int | None) -> None:
        if amount == 0:
            return
        lots = self.lots[account]
        value = lots.get(expires_on, 0) + amount
        if value == 0:
            lots.pop(expires_on, None)
        else:
            lots[expires_on] = value
        self.moves.append(Move(journal, account, expires_on, amount, undoes))

    def apply(self, journal: int, account: int, amount: int, fresh: dt.date, undoes: int | None = None) -> int:
        """Apply one entry of ``amount`` (credit +) on ``account``; returns ``amount``."""
        left = amount
        lots = self.lots[account]
        if undoes is not None:
            net: dict[dt.date, int] = defaultdict(int)
            for m in self.moves:
                if m.account == account and (m.journal == undoes or m.undoes == undoes):
                    net[m.expires_on] += m.amount
            candidates = [(d, n) for d, n in net.items() if n != 0 and (n > 0) == (amount < 0)]
            candidates.sort(key=lambda dn: dn[0], reverse=amount > 0)
            for day, n in candidates:
                if left == 0:
                    break
                if amount > 0:
                    take = min(left, -n)
                elif day == DEBT_ON:
                    take = -min(-left, n)  # the debt the original paid is owed again
                else:
                    take = -min(-left, n, max(lots.get(day, 0), 0))
                if take == 0:
                    continue
                self._add(journal, account, day, take, undoes)
                left -= take
        if left > 0:
            debt = lots.get(DEBT_ON, 0)
            if debt < 0:
                take = min(left, -debt)
                self._add(journal, account, DEBT_ON, take, None)
                left -= take
            if left > 0:
                self._add(journal, account, fresh, left, None)
        elif left < 0:
            for day in sorted(d for d, v in lots.items() if v > 0 and d < DEBT_ON):
                if left == 0:
                    break
                take = -min(-left, lots[day])
                self._add(journal, account, day, take, None)
                left -= take
            if left < 0:
                self._add(journal, account, DEBT_ON, left, None)
        return amount

    def expire(self, journal: int, day: dt.date) -> dict[int, int]:
        """Expire every live lot on or before ``day``; returns points expired per account."""
        out: dict[int, int] = {}
        for account, lots in self.lots.items():
            due = [(d, v) for d, v in lots.items() if d <= day and v > 0]
            for d, v in due:
                self._add(journal, account, d, -v, None)
            if due:
                out[account] = sum(v for _, v in due)
        return out

    def total(self, account: int) -> int:
        """What the account's lots sum to (its balance)."""
        return sum(self.lots.get(account, {}).values())

    def live(self, account: int) -> list[tuple[dt.date, int]]:
        """The account's lots with points left, by expiry date (the debt lot excluded)."""
        return sorted((d, v) for d, v in self.lots.get(account, {}).items() if v > 0 and d < DEBT_ON)


@dataclass(frozen=True)
class NextExpiring:
    """The points of an account expiring first, and when (None: nothing expires)."""

    points: int
    expires_on: dt.date


# The next lot to expire of account ``a.id``, for a LATERAL join: (remaining, expires_on).
NEXT_LOT_SQL = ("SELECT l.remaining, l.expires_on FROM loyalty.point_lots l WHERE l.account_id = a.id "
                "AND l.remaining > 0 AND l.expires_on < DATE '9999-12-31' ORDER BY l.expires_on LIMIT 1")

_NEXT_SQL = """
SELECT DISTINCT ON (l.account_id) l.account_id, l.expires_on, l.remaining
  FROM loyalty.point_lots l
 WHERE l.account_id = ANY ($1::bigint[]) AND l.remaining > 0 AND l.expires_on < '9999-12-31'
 ORDER BY l.account_id, l.expires_on
"""


async def next_expiring(conn: asyncpg.Connection | asyncpg.Pool, account_ids: list[int]) -> dict[int, NextExpiring]:
    """The next lot to expire per account (accounts without one are absent)."""
    if not account_ids:
        return {}
    rows = await conn.fetch(_NEXT_SQL, account_ids)
    return {int(r["account_id"]): NextExpiring(int(r["remaining"]), r["expires_on"]) for r in rows}


@dataclass(frozen=True)
class ProgramExpiry:
    """What end of day expired in one program."""

    program: str
    points: int
    accounts: int
    journals_posted: int
    journals_existing: int


async def breakage_account(conn: asyncpg.Connection | asyncpg.Pool, program: str) -> int:
    """The operator's points breakage account of ``program`` (``operator:<P>:breakage``, opened on first use)."""
    return await open_account(conn, "operator", program, f"PTS:{program}", "credit", "none", BREAKAGE_PURPOSE)


def expiry_key(day: dt.date, program: str, part: int) -> str:
    """The idempotency key of part ``part`` of a program's expiry journal for ``day``.

    >>> expiry_key(dt.date(2027, 3, 1), "ALLY", 1)
    'expire:2027-03-01:ALLY:1'
    """
    return f"expire:{day.isoformat()}:{program}:{part}"


async def _expire_part(conn: asyncpg.Connection, program: str, day: dt.date, part: int, breakage: int,
                       account_ids: list[int]) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM loyalty.expire_lots($1, $2, $3, $4, $5::bigint[])",
                               program, day, expiry_key(day, program, part), breakage, account_ids)


async def expire_day(conn: asyncpg.Connection, day: dt.date,
                     accounts_per_journal: int = EXPIRY_ACCOUNTS_PER_JOURNAL) -> list[ProgramExpiry]:
    """Expire every live lot on or before ``day``, per program with expiry; idempotent.

    Each part is its own transaction: a run interrupted between parts is finished by running
    it again (the parts posted answer with their journals, the rest posts).
    """
    out: list[ProgramExpiry] = []
    codes = [r["code"] for r in await conn.fetch(
        "SELECT code FROM loyalty.programs WHERE points_expiry_months IS NOT NULL ORDER BY code")]
    for code in codes:
        breakage = await breakage_account(conn, code)
        points = accounts = posted = existing = 0
        part = 1
        # The parts a run before this one posted answer with their journals...
        while (row := await _expire_part(conn, code, day, part, breakage, [])) is not None and row["existed"]:
            points += int(row["points"])
            accounts += int(row["accounts"])
            existing += 1
            part += 1
        # ...then what is due now, in slices: one read of the due lots, not one per part.
        due = [int(r[0]) for r in await conn.fetch(
            "SELECT DISTINCT account_id FROM loyalty.point_lots "
            "WHERE program = $1 AND expires_on <= $2 AND remaining > 0 ORDER BY 1", code, day)]
        for i in range(0, len(due), accounts_per_journal):
            row = await _expire_part(conn, code, day, part, breakage, due[i:i + accounts_per_journal])
            if row is None or row["journal_id"] is None:
                continue  # nothing due any more in this slice (a posting took it meanwhile)
            points += int(row["points"])
            accounts += int(row["accounts"])
            posted += 1
            part += 1
        out.append(ProgramExpiry(code, points, accounts, posted, existing))
    return out


async def set_expiry(conn: asyncpg.Connection | asyncpg.Pool, program: str, months: int | None) -> None:
    """Set (or clear, with None) a program's points expiry (``loyalty.set_points_expiry``).

    Turning expiry on puts every member account's balance into one lot expiring ``months``
    after the open business day (points already held get the full period); turning it off
    drops the lots. A change of N keeps the dates of the lots already made.
    """
    if months is not None and not 1 <= months <= EXPIRY_MONTHS_MAX:
        raise ProvisioningError(f"points expiry must be 1..{EXPIRY_MONTHS_MAX} months")
    if not await conn.fetchval("SELECT 1 FROM loyalty.programs WHERE code=$1", program):
        raise ProvisioningError(f"no program {program}")
    await conn.execute("SELECT loyalty.set_points_expiry($1, $2)", program, months)


async def set_residual_policy(conn: asyncpg.Connection, program: str, policy: str | None,
                              grace_days: int | None) -> None:
    """Set a program's residual stored-value policy and grace period (None: unchanged)."""
    if policy is not None and policy not in RESIDUAL_POLICIES:
        raise ProvisioningError(f"residual policy must be one of {', '.join(RESIDUAL_POLICIES)}")
    if grace_days is not None and not 0 <= grace_days <= RESIDUAL_GRACE_DAYS_MAX:
        raise ProvisioningError(f"residual grace must be 0..{RESIDUAL_GRACE_DAYS_MAX} days")
    await conn.execute("UPDATE loyalty.programs SET residual_policy = coalesce($2, residual_policy), "
                       "residual_grace_days = coalesce($3, residual_grace_days) WHERE code = $1",
                       program, policy, grace_days)

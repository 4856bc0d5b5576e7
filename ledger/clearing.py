"""Merchant clearing for one business day, and the settlement journals that close it.

Per merchant, from the day's journals (set-based SQL over ledger.entries, each
journal classified by the loyalty transaction it records and, for a void,
refund or reversal, by the transaction it undoes):

- points issued: net points moved from the merchant's points clearing account
  to members by purchase-earns and top-ups; owed at the program's issue price;
- points redeemed: net points moved into it by redemptions; reimbursed at the
  program's redemption value;
- stored value loaded (cash the merchant collected) and spent (sales the
  operator owes for), and the fees booked against the merchant;
- ``net_minor = redeemed_minor + sv_spent_minor - issued_minor - sv_loaded_minor
  - fees_minor``: positive = the operator pays the merchant.

Voids, refunds and reversals are netted into the figure of what they undo.
One settlement journal per merchant (posted through the Ledger engine, key
``settle:<date>:<merchant>``) brings both clearing accounts' share of the day
to zero: points against the program's points-outstanding account, points
converted to money against the program's points-settlement account, and the
net to the merchant's settlement payable (credit) or receivable (debit)
account. Settlement journals carry the business date they are posted on (the
next open day); ``metadata.settlement.date`` names the day they clear.

Re-running for a cleared day changes nothing: the figures are stored once, and
the journals are idempotent on their keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger import db
from ledger.accounts import open_account
from ledger.commands import Command, Leg, Status, transfer
from ledger.engine import Ledger
from ledger.errors import SwitchdError
from ledger.loyalty.exchange import DESK_ID, desk_account
from ledger.revenue import MERCHANT_CHARGE_PURPOSES

SETTLE_KEY_PREFIX = "settle:"

# The day's posted loyalty transactions with the type of what they ultimately
# concern: a void/refund/reversal takes its original's type; a reversal of a
# void or refund, the type of the transaction that one undid.
TX_ROOT_SQL = """
SELECT t.journal_id, t.id, t.txn_type, t.merchant_id, t.card_id, t.program, t.points_delta,
       t.money_delta_minor, t.fee_minor, t.target_program, t.target_points_delta, t.txn_type AS root_type
  FROM loyalty.transactions t
 WHERE t.business_date = $1 AND t.journal_id IS NOT NULL
   AND t.txn_type NOT IN ('void', 'refund', 'reversal')
UNION ALL
SELECT t.journal_id, t.id, t.txn_type, t.merchant_id, t.card_id, t.program, t.points_delta,
       t.money_delta_minor, t.fee_minor, t.target_program, t.target_points_delta,
       CASE WHEN o.txn_type IN ('void', 'refund') THEN oo.txn_type ELSE o.txn_type END
  FROM loyalty.transactions t
  LEFT JOIN loyalty.transactions o ON o.journal_id = t.original_journal_id
  LEFT JOIN loyalty.transactions oo ON oo.journal_id = o.original_journal_id
 WHERE t.business_date = $1 AND t.journal_id IS NOT NULL
   AND t.txn_type IN ('void', 'refund', 'reversal')
"""

# The accounts whose entries against a merchant's money clearing are its fees: fee income, and
# the price of the top-up cards it bought (ledger.revenue.MERCHANT_CHARGE_PURPOSES).
_CHARGES = ", ".join(f"'{p}'" for p in MERCHANT_CHARGE_PURPOSES)

# Every figure of every active merchant for day $1, from the ledger's entries.
# An entry on a clearing account is classified by its journal's root type and
# by the account on the other side of its leg (stored value or fee income).
FIGURES_SQL = f"""
WITH tx AS ({TX_ROOT_SQL}),
acc AS (
    SELECT clearing_points_account_id AS account_id, merchant_id, 'P' AS kind FROM loyalty.merchants
    UNION ALL
    SELECT clearing_money_account_id, merchant_id, 'M' FROM loyalty.merchants
),
ce AS (
    SELECT acc.merchant_id, acc.kind, e.amount, tx.root_type, pa.purpose AS other
      FROM tx
      JOIN ledger.entries e ON e.journal_id = tx.journal_id
      JOIN acc ON acc.account_id = e.account_id
      JOIN ledger.entries p ON p.journal_id = e.journal_id
                           AND p.leg = CASE WHEN e.leg % 2 = 1 THEN e.leg + 1 ELSE e.leg - 1 END
      JOIN ledger.accounts pa ON pa.id = p.account_id
),
sums AS (
    SELECT merchant_id,
           -coalesce(sum(amount) FILTER (WHERE kind = 'P' AND root_type IN ('earn', 'topup')), 0) AS points_issued,
           coalesce(sum(amount) FILTER (WHERE kind = 'P' AND root_type = 'redeem'), 0) AS points_redeemed,
           -coalesce(sum(amount) FILTER (WHERE kind = 'M' AND other = 'stored_value' AND root_type = 'load'), 0)
               AS sv_loaded_minor,
           coalesce(sum(amount) FILTER (WHERE kind = 'M' AND other = 'stored_value' AND root_type = 'sv_purchase'), 0)
               AS sv_spent_minor,
           -coalesce(sum(amount) FILTER (WHERE kind = 'M' AND other IN ({_CHARGES})), 0) AS fees_minor,
           coalesce(sum(amount) FILTER (WHERE kind = 'P'), 0) AS points_clearing_before,
           coalesce(sum(amount) FILTER (WHERE kind = 'M'), 0) AS money_clearing_before
      FROM ce GROUP BY merchant_id
),
counts AS (
    SELECT merchant_id,
           count(*) FILTER (WHERE txn_type IN ('earn', 'topup') AND points_delta > 0) AS issue_count,
           count(*) FILTER (WHERE txn_type = 'redeem') AS redeem_count,
           count(*) FILTER (WHERE txn_type = 'load') AS load_count,
           count(*) FILTER (WHERE txn_type = 'sv_purchase') AS spend_count,
           count(*) FILTER (WHERE txn_type = 'void') AS void_count,
           count(*) FILTER (WHERE txn_type = 'refund') AS refund_count,
           -- A pre-authorisation's release moved no money: it is no reversal of anything cleared.
           count(*) FILTER (WHERE txn_type = 'reversal' AND root_type IS DISTINCT FROM 'preauth') AS reversal_count
      -- An exchange at a terminal is the exchange desk's, not the merchant's (cleared below).
      FROM tx WHERE root_type IS DISTINCT FROM 'exchange' GROUP BY merchant_id
),
active AS (SELECT merchant_id FROM sums UNION SELECT merchant_id FROM counts)
SELECT $1::date AS business_date, m.merchant_id, m.program, cur.asset AS currency_asset,
       coalesce(c.issue_count, 0) AS issue_count, coalesce(s.points_issued, 0) AS points_issued,
       p.issue_price_minor, coalesce(s.points_issued, 0) * p.issue_price_minor AS issued_minor,
       coalesce(c.redeem_count, 0) AS redeem_count, coalesce(s.points_redeemed, 0) AS points_redeemed,
       p.redeem_value_minor, coalesce(s.points_redeemed, 0) * p.redeem_value_minor AS redeemed_minor,
       coalesce(c.load_count, 0) AS load_count, coalesce(s.sv_loaded_minor, 0) AS sv_loaded_minor,
       coalesce(c.spend_count, 0) AS spend_count, coalesce(s.sv_spent_minor, 0) AS sv_spent_minor,
       coalesce(c.void_count, 0) AS void_count, coalesce(c.refund_count, 0) AS refund_count,
       coalesce(c.reversal_count, 0) AS reversal_count, coalesce(s.fees_minor, 0) AS fees_minor,
       coalesce(s.points_redeemed, 0) * p.redeem_value_minor + coalesce(s.sv_spent_minor, 0)
         - coalesce(s.points_issued, 0) * p.issue_price_minor - coalesce(s.sv_loaded_minor, 0)
         - coalesce(s.fees_minor, 0) AS net_minor,
       coalesce(s.points_clearing_before, 0) AS points_clearing_before,
       coalesce(s.money_clearing_before, 0) AS money_clearing_before
  FROM active a
  JOIN loyalty.merchants m ON m.merchant_id = a.merchant_id
  JOIN loyalty.programs p ON p.code = m.program
  JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
  LEFT JOIN sums s ON s.merchant_id = m.merchant_id
  LEFT JOIN counts c ON c.merchant_id = m.merchant_id
"""

FIGURE_COLUMNS = (
    "business_date", "merchant_id", "program", "currency_asset", "issue_count", "points_issued",
    "issue_price_minor", "issued_minor", "redeem_count", "points_redeemed", "redeem_value_minor",
    "redeemed_minor", "load_count", "sv_loaded_minor", "spend_count", "sv_spent_minor", "void_count",
    "refund_count", "reversal_count", "fees_minor", "net_minor", "points_clearing_before",
    "money_clearing_before",
)

# Alliance matrix for day $1: each member's net redemptions at B on the day are
# attributed to the merchants that issued that member's points (net, through
# the day), pro rata and floored; what is left (rounding, points from prizes or
# from before the platform) is attributed to issuer '*'. The exchange desk
# (ledger.loyalty.exchange.DESK_ID) redeems the points members exchange out of a
# program, and issues those they exchange into one.
MATRIX_SQL = f"""
WITH tx AS ({TX_ROOT_SQL}),
red AS (
    SELECT tx.program, tx.card_id,
           CASE WHEN tx.root_type = 'exchange' THEN '{DESK_ID}' ELSE tx.merchant_id END AS redeemer,
           -sum(tx.points_delta)::bigint AS pts
      FROM tx JOIN loyalty.programs p ON p.code = tx.program AND p.kind = 'alliance'
     WHERE tx.root_type IN ('redeem', 'exchange')
     GROUP BY 1, 2, 3 HAVING -sum(tx.points_delta) > 0
),
hist AS (
    SELECT h.program, h.card_id, h.issuer, sum(h.points_delta)::bigint AS pts
      FROM (
        SELECT t.program, t.card_id, t.merchant_id AS issuer, t.points_delta
          FROM loyalty.transactions t
         WHERE t.business_date <= $1 AND t.journal_id IS NOT NULL AND t.txn_type IN ('earn', 'topup')
        UNION ALL
        SELECT t.program, t.card_id, t.merchant_id, t.points_delta
          FROM loyalty.transactions t
          JOIN loyalty.transactions o ON o.journal_id = t.original_journal_id
          LEFT JOIN loyalty.transactions oo ON oo.journal_id = o.original_journal_id
         WHERE t.business_date <= $1 AND t.journal_id IS NOT NULL
           AND t.txn_type IN ('void', 'refund', 'reversal')
           AND (CASE WHEN o.txn_type IN ('void', 'refund') THEN oo.txn_type ELSE o.txn_type END)
               IN ('earn', 'topup')
        UNION ALL
        -- Points exchanged into the program (and their voids and reversals): the desk issued them.
        SELECT t.target_program, t.card_id, '{DESK_ID}', t.target_points_delta
          FROM loyalty.transactions t
         WHERE t.business_date <= $1 AND t.journal_id IS NOT NULL AND t.target_program IS NOT NULL
      ) h
     WHERE h.card_id IN (SELECT card_id FROM red)
     GROUP BY 1, 2, 3 HAVING sum(h.points_delta) > 0
),
tot AS (SELECT program, card_id, sum(pts)::bigint AS total FROM hist GROUP BY 1, 2),
share AS (
    SELECT red.program, h.issuer, red.redeemer,
           red.pts * h.pts / tot.total AS pts  -- all positive: integer division floors
      FROM red
      JOIN hist h ON h.program = red.program AND h.card_id = red.card_id
      JOIN tot ON tot.program = red.program AND tot.card_id = red.card_id
),
attributed AS (SELECT program, issuer, redeemer, sum(pts)::bigint AS pts FROM share GROUP BY 1, 2, 3),
rest AS (
    SELECT r.program, '*'::text AS issuer, r.redeemer, r.pts - coalesce(a.pts, 0) AS pts
      FROM (SELECT program, redeemer, sum(pts) AS pts FROM red GROUP BY 1, 2) r
      LEFT JOIN (SELECT program, redeemer, sum(pts) AS pts FROM attributed GROUP BY 1, 2) a
             ON a.program = r.program AND a.redeemer = r.redeemer
)
SELECT $1::date AS business_date, program, issuer, redeemer, pts FROM attributed WHERE pts > 0
UNION ALL
SELECT $1::date, program, issuer, redeemer, pts FROM rest WHERE pts > 0
"""


# The exchange desk's figures per program for day $1 (ledger/loyalty/exchange.py): points it
# took in where the program is an exchange's source, points it gave out where it is the target,
# each net of voids and reversals, from the entries on the program's exchange account.
EXCHANGE_FIGURES_SQL = f"""
WITH tx AS ({TX_ROOT_SQL}),
x AS (
    SELECT a.owner_id AS program, tx.journal_id, tx.txn_type,
           CASE WHEN tx.program = a.owner_id THEN e.amount ELSE 0 END AS in_pts,
           CASE WHEN tx.target_program = a.owner_id THEN -e.amount ELSE 0 END AS out_pts
      FROM tx
      JOIN ledger.entries e ON e.journal_id = tx.journal_id
      JOIN ledger.accounts a ON a.id = e.account_id AND a.owner_kind = 'operator' AND a.purpose = 'exchange'
     WHERE tx.root_type = 'exchange'
),
sums AS (
    SELECT program, count(DISTINCT journal_id) FILTER (WHERE txn_type = 'exchange') AS exchange_count,
           sum(in_pts)::bigint AS points_in, sum(out_pts)::bigint AS points_out
      FROM x GROUP BY program
)
SELECT $1::date AS business_date, s.program, cur.asset AS currency_asset, s.exchange_count,
       s.points_in, p.redeem_value_minor, s.points_in * p.redeem_value_minor AS redeemed_minor,
       s.points_out, p.issue_price_minor, s.points_out * p.issue_price_minor AS issued_minor,
       s.points_in * p.redeem_value_minor - s.points_out * p.issue_price_minor AS net_minor
  FROM sums s
  JOIN loyalty.programs p ON p.code = s.program
  JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
"""
EXCHANGE_FIGURE_COLUMNS = ("business_date", "program", "currency_asset", "exchange_count", "points_in",
                           "redeem_value_minor", "redeemed_minor", "points_out", "issue_price_minor",
                           "issued_minor", "net_minor")


class ClearingError(SwitchdError):
    """Clearing cannot proceed; ``str()`` names the merchants or the day."""


@dataclass(frozen=True)
class ClearingReport:
    """What one clearing run did for a day."""

    business_date: dt.date
    merchants: int
    computed_now: bool  # False: the day was cleared before; figures were read back
    journals_posted: int
    journals_existing: int
    net_total_minor: dict[str, int]


async def is_cleared(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> bool:
    """True when clearing figures for ``day`` are stored."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM eod.clearing_runs WHERE business_date=$1)", day))


async def compute_figures(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> list[asyncpg.Record]:
    """The day's figures per merchant, computed afresh (nothing stored)."""
    return list(await conn.fetch(FIGURES_SQL + " ORDER BY m.merchant_id", day))


async def _store_figures(conn: asyncpg.Connection, day: dt.date) -> bool:
    """Compute and store the day's figures and matrix in one transaction; False when already stored."""
    async with conn.transaction():
        # Serialise concurrent clearings of the same day (eod holds a session lock too).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('eod.clearing'), $1)",
                           day.toordinal())
        if await is_cleared(conn, day):
            return False
        # The CTEs' row estimates are off by orders of magnitude (a day is all of a
        # table, or almost none of it); a nested loop over them turns a 2 s matrix
        # into minutes at a million journals. Hash joins are right at every size.
        # (Not reconciliation's larger work_mem: measured, the figures were no faster with it.)
        await db.for_whole_day_scans(conn, work_mem_mb=None)
        cols = ", ".join(FIGURE_COLUMNS)
        await conn.execute(f"INSERT INTO eod.clearing_merchants({cols}) SELECT {cols} FROM ({FIGURES_SQL}) f", day)
        bad = await conn.fetch(
            "SELECT merchant_id, points_clearing_before, points_issued, points_redeemed, money_clearing_before, "
            "sv_spent_minor, sv_loaded_minor, fees_minor FROM eod.clearing_merchants WHERE business_date=$1 "
            "AND (points_clearing_before <> points_redeemed - points_issued "
            "     OR money_clearing_before <> sv_spent_minor - sv_loaded_minor - fees_minor) "
            "ORDER BY merchant_id LIMIT 20", day)
        if bad:
            # Entries on a clearing account that no figure explains: refuse, name them.
            raise ClearingError("clearing accounts hold entries no figure explains for merchants "
                                + ", ".join(r["merchant_id"] for r in bad))
        await conn.execute(
            "INSERT INTO eod.clearing_matrix(business_date, program, issuer_id, redeemer_id, points) "
            f"SELECT * FROM ({MATRIX_SQL}) mx", day)
        xcols = ", ".join(EXCHANGE_FIGURE_COLUMNS)
        await conn.execute(f"INSERT INTO eod.clearing_exchange({xcols}) SELECT {xcols} FROM ({EXCHANGE_FIGURES_SQL}) x",
                           day)
        await conn.execute(
            "INSERT INTO eod.clearing_runs(business_date, currency_asset, merchants, net_total_minor) "
            "SELECT $1, cur.asset, count(cm.merchant_id), coalesce(sum(cm.net_minor), 0) "
            "FROM loyalty.currencies cur "
            "LEFT JOIN eod.clearing_merchants cm ON cm.currency_asset = cur.asset AND cm.business_date = $1 "
            "GROUP BY cur.asset", day)
        return True


_SETTLEMENT_ACCOUNTS_SQL = """
WITH need AS (
    SELECT cm.merchant_id, cm.program, cm.currency_asset FROM eod.clearing_merchants cm WHERE cm.business_date = $1
), ins AS (
    INSERT INTO ledger.accounts(owner_kind, owner_id, purpose, asset, normal_side, limit_mode)
    SELECT 'merchant', merchant_id, 'settlement_payable', currency_asset, 'credit', 'none' FROM need
    UNION ALL
    SELECT 'merchant', merchant_id, 'settlement_receivable', currency_asset, 'debit', 'none' FROM need
    UNION ALL
    SELECT DISTINCT 'operator', program, 'points_settlement', currency_asset, 'credit', 'none' FROM need
    ON CONFLICT (owner_kind, owner_id, purpose, asset) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins
"""

_LEG_ACCOUNTS_SQL = """
SELECT cm.*, m.clearing_points_account_id AS cp, m.clearing_money_account_id AS cmny,
       p.points_outstanding_account_id AS outstanding, pay.id AS payable, rec.id AS receivable, ps.id AS funding
  FROM eod.clearing_merchants cm
  JOIN loyalty.merchants m ON m.merchant_id = cm.merchant_id
  JOIN loyalty.programs p ON p.code = cm.program
  JOIN ledger.accounts pay ON pay.owner_kind = 'merchant' AND pay.owner_id = cm.merchant_id
       AND pay.purpose = 'settlement_payable' AND pay.asset = cm.currency_asset
  JOIN ledger.accounts rec ON rec.owner_kind = 'merchant' AND rec.owner_id = cm.merchant_id
       AND rec.purpose = 'settlement_receivable' AND rec.asset = cm.currency_asset
  JOIN ledger.accounts ps ON ps.owner_kind = 'operator' AND ps.owner_id = cm.program
       AND ps.purpose = 'points_settlement' AND ps.asset = cm.currency_asset
 WHERE cm.business_date = $1
 ORDER BY cm.merchant_id
"""


def settlement_legs(row: dict[str, Any] | asyncpg.Record) -> list[Leg]:
    """The legs that bring a merchant's clearing accounts' share of the day to zero.

    >>> r = {"points_clearing_before": -120, "issued_minor": 120, "redeemed_minor": 0, "net_minor": -150,
    ...      "cp": 1, "cmny": 2, "outstanding": 3, "funding": 4, "payable": 5, "receivable": 6}
    >>> [(leg.debit_account_id, leg.credit_account_id, leg.amount) for leg in settlement_legs(r)]
    [(3, 1, 120), (2, 4, 120), (6, 2, 150)]
    >>> refunds = {**r, "points_clearing_before": 50, "issued_minor": -50, "net_minor": 50}
    >>> [(leg.debit_account_id, leg.credit_account_id, leg.amount) for leg in settlement_legs(refunds)]
    [(1, 3, 50), (4, 2, 50), (2, 5, 50)]
    """
    legs: list[Leg] = []
    pts = int(row["points_clearing_before"])
    if pts < 0:  # net issued: the operator's points outstanding take the merchant's points debt
        legs.append(Leg(int(row["outstanding"]), int(row["cp"]), -pts))
    elif pts > 0:
        legs.append(Leg(int(row["cp"]), int(row["outstanding"]), pts))
    # Valued points, netted: issued points are owed at the issue price, redeemed points
    # reimbursed at the redemption value. Either can be negative (a day of refunds of an
    # earlier day's earns), so one signed leg, never a pair guarded by "> 0".
    valued = int(row["redeemed_minor"]) - int(row["issued_minor"])
    if valued > 0:
        legs.append(Leg(int(row["funding"]), int(row["cmny"]), valued))
    elif valued < 0:
        legs.append(Leg(int(row["cmny"]), int(row["funding"]), -valued))
    net = int(row["net_minor"])
    if net > 0:
        legs.append(Leg(int(row["cmny"]), int(row["payable"]), net))
    elif net < 0:
        legs.append(Leg(int(row["receivable"]), int(row["cmny"]), -net))
    return legs


def settlement_key(day: dt.date, merchant_id: str) -> str:
    """Idempotency key of a merchant's settlement journal for a day.

    >>> settlement_key(dt.date(2026, 1, 2), "M1")
    'settle:2026-01-02:M1'
    """
    return f"{SETTLE_KEY_PREFIX}{day.isoformat()}:{merchant_id}"


async def clear_day(conn: asyncpg.Connection, ledger: Ledger, day: dt.date) -> ClearingReport:
    """Clear ``day`` (a closed business day): store the figures once, post the settlement journals.

    The caller has cut the day over (no journal can still land in it).
    """
    open_day = await conn.fetchval("SELECT open_date FROM ledger.business_day WHERE singleton")
    if open_day <= day:
        raise ClearingError(f"business day {day} is still open; cut it over first")
    computed = await _store_figures(conn, day)
    await conn.execute(_SETTLEMENT_ACCOUNTS_SQL, day)
    rows = await conn.fetch(_LEG_ACCOUNTS_SQL, day)
    cmds: list[Command] = []
    merchants: list[str] = []
    for r in rows:
        if r["journal_id"] is not None:
            continue
        legs = settlement_legs(r)
        if not legs:
            continue  # nothing to move (a day that netted to zero everywhere)
        meta = {"settlement": {"date": day.isoformat(), "merchant_id": r["merchant_id"],
                               "net_minor": int(r["net_minor"])}}
        cmds.append(transfer(settlement_key(day, r["merchant_id"]), legs, metadata=meta))
        merchants.append(r["merchant_id"])
    for cmd, program in await _exchange_settlements(conn, day):
        cmds.append(cmd)
        merchants.append(exchange_owner(program))
    results = await ledger.post_many(cmds) if cmds else []
    failed = [(m, res) for m, res in zip(merchants, results, strict=True) if not res.ok]
    ids = [(m, res.journal_id) for m, res in zip(merchants, results, strict=True) if res.ok]
    xids = [(m.removeprefix(_EXCHANGE_OWNER), j) for m, j in ids if m.startswith(_EXCHANGE_OWNER)]
    ids = [(m, j) for m, j in ids if not m.startswith(_EXCHANGE_OWNER)]
    if xids:
        await conn.execute(
            "UPDATE eod.clearing_exchange cx SET journal_id = u.j FROM unnest($2::text[], $3::bigint[]) AS u(p, j) "
            "WHERE cx.business_date = $1 AND cx.program = u.p", day, [p for p, _ in xids], [j for _, j in xids])
    if ids:
        await conn.execute(
            "UPDATE eod.clearing_merchants cm SET journal_id = u.j FROM unnest($2::text[], $3::bigint[]) AS u(m, j) "
            "WHERE cm.business_date = $1 AND cm.merchant_id = u.m",
            day, [m for m, _ in ids], [j for _, j in ids])
    if failed:
        first = failed[0][1]
        raise ClearingError(f"{len(failed)} settlement journals failed (first: merchant {failed[0][0]}: "
                            f"{first.status} {first.detail})")
    totals = await conn.fetch(
        "SELECT currency_asset, net_total_minor FROM eod.clearing_runs WHERE business_date=$1", day)
    return ClearingReport(
        business_date=day, merchants=len(rows), computed_now=computed,
        journals_posted=sum(1 for r in results if r.status is Status.POSTED),
        journals_existing=sum(1 for r in results if r.status is Status.EXISTS),
        net_total_minor={r["currency_asset"]: int(r["net_total_minor"]) for r in totals})


_EXCHANGE_OWNER = "exchange:"


def exchange_owner(program: str) -> str:
    """The exchange desk of ``program`` where clearing names merchants (keys, messages).

    >>> exchange_owner("ALLY"), settlement_key(dt.date(2026, 1, 2), exchange_owner("ALLY"))
    ('exchange:ALLY', 'settle:2026-01-02:exchange:ALLY')
    """
    return f"{_EXCHANGE_OWNER}{program}"


def exchange_settlement_legs(points_day_sum: int, redeemed_minor: int, issued_minor: int, desk: int,
                             outstanding: int, funding: int, income: int) -> list[Leg]:
    """The legs that clear a program's exchange account for a day (specs/ACCOUNTING.md).

    Points: the day's sum on the desk's account against the program's points outstanding.
    Money: points taken in are paid by the program's points settlement at the redemption value,
    points given out paid into it at the issue price, both against the operator's exchange income.

    >>> [(g.debit_account_id, g.credit_account_id, g.amount) for g in exchange_settlement_legs(700, 700, 0, 1, 2, 3, 4)]
    [(1, 2, 700), (3, 4, 700)]
    >>> [(g.debit_account_id, g.credit_account_id, g.amount) for g in exchange_settlement_legs(-315, 0, 945, 1, 2, 3, 4)]
    [(2, 1, 315), (4, 3, 945)]
    """
    legs: list[Leg] = []
    if points_day_sum > 0:
        legs.append(Leg(desk, outstanding, points_day_sum))
    elif points_day_sum < 0:
        legs.append(Leg(outstanding, desk, -points_day_sum))
    valued = redeemed_minor - issued_minor
    if valued > 0:
        legs.append(Leg(funding, income, valued))
    elif valued < 0:
        legs.append(Leg(income, funding, -valued))
    return legs


async def _exchange_settlements(conn: asyncpg.Connection, day: dt.date) -> list[tuple[Command, str]]:
    """The settlement commands of the day's exchange figures not yet settled, with their programs."""
    rows = await conn.fetch(
        "SELECT cx.*, p.points_outstanding_account_id AS outstanding FROM eod.clearing_exchange cx "
        "JOIN loyalty.programs p ON p.code = cx.program WHERE cx.business_date = $1 AND cx.journal_id IS NULL "
        "ORDER BY cx.program", day)
    out: list[tuple[Command, str]] = []
    for r in rows:
        program, asset = r["program"], r["currency_asset"]
        desk = await desk_account(conn, program)
        funding = await open_account(conn, "operator", program, asset, "credit", "none", "points_settlement")
        income = await open_account(conn, "operator", asset, asset, "credit", "none", "exchange_income")
        legs = exchange_settlement_legs(int(r["points_in"]) - int(r["points_out"]), int(r["redeemed_minor"]),
                                        int(r["issued_minor"]), desk, int(r["outstanding"]), funding, income)
        if not legs:
            continue
        meta = {"settlement": {"date": day.isoformat(), "exchange_program": program, "net_minor": int(r["net_minor"])}}
        out.append((transfer(settlement_key(day, exchange_owner(program)), legs, metadata=meta), program))
    return out


async def exchange_figures(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> list[dict[str, Any]]:
    """The stored exchange desk figures of a day, one dict per program, by program."""
    rows = await conn.fetch("SELECT * FROM eod.clearing_exchange WHERE business_date=$1 ORDER BY program", day)
    return [{**dict(r), "business_date": r["business_date"].isoformat()} for r in rows]


async def figures(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> list[dict[str, Any]]:
    """The stored clearing figures of a day, one dict per merchant, by merchant id."""
    rows = await conn.fetch(
        "SELECT * FROM eod.clearing_merchants WHERE business_date=$1 ORDER BY merchant_id", day)
    out = []
    for r in rows:
        d = dict(r)
        d["business_date"] = r["business_date"].isoformat()
        out.append(d)
    return out


async def matrix(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> list[dict[str, Any]]:
    """The stored alliance matrix of a day: program, issuer, redeemer, points (all of it: for the
    day's summary file; a page or a stream reads it with :func:`matrix_page`)."""
    rows = await conn.fetch(
        "SELECT program, issuer_id, redeemer_id, points FROM eod.clearing_matrix WHERE business_date=$1 "
        "ORDER BY program, issuer_id, redeemer_id", day)
    return [dict(r) for r in rows]


# Pages of the stored figures and matrix, for screens and streamed files: a day of 1,000
# merchants has a matrix of up to a million pairs, never read whole into one answer.
PAGE_ROWS_MAX = 5_000
MATRIX_EXPORT_ROWS_MAX = 2_000_000
MatrixKey = tuple[str, str, str]  # (program, issuer_id, redeemer_id): the matrix's order and cursor

_FIGURES_PAGE_SQL = """
SELECT * FROM eod.clearing_merchants
 WHERE business_date = $1 AND ($2::text IS NULL OR merchant_id = $2) AND ($3::text IS NULL OR merchant_id > $3)
 ORDER BY merchant_id LIMIT $4
"""

_FIGURE_TOTALS_SQL = """
SELECT currency_asset, count(*) AS merchants, sum(fees_minor)::bigint AS fees_minor,
       sum(net_minor)::bigint AS net_minor
  FROM eod.clearing_merchants
 WHERE business_date = $1 AND ($2::text IS NULL OR merchant_id = $2)
 GROUP BY currency_asset ORDER BY currency_asset
"""

# The platform's pages walk the primary key (business_date, program, issuer_id, redeemer_id)
# from the cursor. A merchant's: the pairs it issued and those it redeemed, each branch a range
# of its own index (migration 0015), merged in the matrix's order.
_MATRIX_PAGE_SQL = """
SELECT program, issuer_id, redeemer_id, points FROM eod.clearing_matrix
 WHERE business_date = $1 AND (program, issuer_id, redeemer_id) > ($2, $3, $4)
 ORDER BY program, issuer_id, redeemer_id LIMIT $5
"""
_MATRIX_MERCHANT_PAGE_SQL = """
SELECT * FROM (
    (SELECT program, issuer_id, redeemer_id, points FROM eod.clearing_matrix
      WHERE business_date = $1 AND issuer_id = $6 AND (program, issuer_id, redeemer_id) > ($2, $3, $4)
      ORDER BY program, redeemer_id LIMIT $5)
    UNION
    (SELECT program, issuer_id, redeemer_id, points FROM eod.clearing_matrix
      WHERE business_date = $1 AND redeemer_id = $6 AND (program, issuer_id, redeemer_id) > ($2, $3, $4)
      ORDER BY program, issuer_id LIMIT $5)
) m ORDER BY program, issuer_id, redeemer_id LIMIT $5
"""


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), PAGE_ROWS_MAX))


async def figures_page(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, merchant_id: str | None = None,
                       after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The stored figures of a day by merchant id, after ``after`` (keyset), at most ``limit``
    (<= PAGE_ROWS_MAX); ``merchant_id``: that merchant's only."""
    rows = await conn.fetch(_FIGURES_PAGE_SQL, day, merchant_id, after, _bounded(limit))
    out = []
    for r in rows:
        d = dict(r)
        d["business_date"] = r["business_date"].isoformat()
        out.append(d)
    return out


async def figure_totals(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, merchant_id: str | None = None
                        ) -> list[dict[str, Any]]:
    """Per settlement currency: merchants, fees and net of the day (``merchant_id``: its own)."""
    return [dict(r) for r in await conn.fetch(_FIGURE_TOTALS_SQL, day, merchant_id)]


async def matrix_page(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, merchant_id: str | None = None,
                      after: MatrixKey | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The day's matrix in (program, issuer, redeemer) order after ``after`` (keyset), at most
    ``limit`` (<= PAGE_ROWS_MAX) pairs; ``merchant_id``: only the pairs it issued or redeemed."""
    program, issuer, redeemer = after if after is not None else ("", "", "")
    if merchant_id is None:
        rows = await conn.fetch(_MATRIX_PAGE_SQL, day, program, issuer, redeemer, _bounded(limit))
    else:
        rows = await conn.fetch(_MATRIX_MERCHANT_PAGE_SQL, day, program, issuer, redeemer, _bounded(limit),
                                merchant_id)
    return [dict(r) for r in rows]


def matrix_key(row: dict[str, Any]) -> MatrixKey:
    """A matrix row's place in the order: the cursor of the page that ends with it."""
    return (str(row["program"]), str(row["issuer_id"]), str(row["redeemer_id"]))


async def matrix_pages(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, merchant_id: str | None = None,
                       rows_max: int = MATRIX_EXPORT_ROWS_MAX) -> AsyncIterator[list[dict[str, Any]]]:
    """The day's matrix (or a merchant's pairs) in pages of PAGE_ROWS_MAX, at most ``rows_max`` rows
    (<= MATRIX_EXPORT_ROWS_MAX); each page its own short query, so nothing is held open."""
    left = max(0, min(rows_max, MATRIX_EXPORT_ROWS_MAX))
    after: MatrixKey | None = None
    while left > 0:
        page = await matrix_page(conn, day, merchant_id, after, min(PAGE_ROWS_MAX, left))
        if not page:
            return
        yield page
        left -= len(page)
        after = matrix_key(page[-1])


async def cleared_at(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date) -> dt.datetime | None:
    """When the day's figures were stored (the first clearing)."""
    value = await conn.fetchval("SELECT min(cleared_at) FROM eod.clearing_runs WHERE business_date=$1", day)
    return value if isinstance(value, dt.datetime) else None


async def cleared_days(conn: asyncpg.Connection | asyncpg.Pool, before: dt.date | None = None,
                       limit: int = 50) -> list[dt.date]:
    """The cleared business days, newest first, before ``before`` (keyset), at most ``limit``."""
    rows = await conn.fetch(
        "SELECT DISTINCT business_date FROM eod.clearing_runs WHERE $1::date IS NULL OR business_date < $1 "
        "ORDER BY business_date DESC LIMIT $2", before, max(1, min(limit, 1000)))
    return [r["business_date"] for r in rows]

"""What one exchange between programs needs to decide, as SQL that a request's context embeds.

An exchange's terms: both programs (status, currency), the rate in force (the latest effective
time not in the future), the card's points account in the target program, both programs'
exchange desk accounts, and what the card has exchanged on the business day (for the daily
limit and the concurrency guard; ledger/loyalty/exchange.py). :func:`terms_select` writes the
query over any expressions for the card, the programs and the day, so that the terminal's
context read (ledger/loyalty/lookup.py) reads the terms in the same round trip as the rest of
its request, and the pages and the CLI read them alone.

>>> "$3" in terms_select("$1::bigint", "$2", "$3", "$4")
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The columns of a terms row, in order (the context prefixes them with ``xt_``).
COLUMNS = ("from_program", "from_status", "from_currency", "to_program", "to_status", "to_currency",
           "rate_id", "rate_num", "rate_den", "fee_bps", "to_account_id", "from_desk_id", "to_desk_id",
           "day_count", "day_points")


def terms_select(card: str, from_program: str, to_program: str, day: str, prefix: str = "") -> str:
    """The terms query for SQL expressions ``card`` (bigint), ``from_program``, ``to_program``
    (text) and ``day`` (date); each column named ``prefix`` + its name in :data:`COLUMNS`.

    day_count counts every exchange of the card and day that posted, undone or not: it numbers
    the guard, and a guard once taken stays taken. day_points counts what still stands: an
    exchange's points less what its voids and reversals in force undid (a reversed void undoes
    nothing)."""
    names = [f"{prefix}{c}" for c in COLUMNS]
    return f"""
SELECT fp.code AS {names[0]}, fp.status AS {names[1]}, fp.currency AS {names[2]},
       tp.code AS {names[3]}, tp.status AS {names[4]}, tp.currency AS {names[5]},
       r.id AS {names[6]}, r.rate_num AS {names[7]}, r.rate_den AS {names[8]}, r.fee_bps AS {names[9]},
       ta.id AS {names[10]}, fd.id AS {names[11]}, td.id AS {names[12]},
       (SELECT count(*) FROM loyalty.transactions t
         WHERE t.card_id = {card} AND t.business_date = {day} AND t.txn_type = 'exchange'
           AND t.journal_id IS NOT NULL) AS {names[13]},
       (SELECT coalesce(sum(greatest(t.amount - coalesce(
                   (SELECT sum(coalesce(u.undo_units, t.amount)) FROM loyalty.transactions u
                     WHERE u.original_journal_id = t.journal_id AND u.journal_id IS NOT NULL
                       AND u.txn_type IN ('void', 'reversal')
                       AND NOT EXISTS (SELECT 1 FROM loyalty.transactions r
                                        WHERE r.original_journal_id = u.journal_id AND r.txn_type = 'reversal'
                                          AND r.journal_id IS NOT NULL)), 0), 0)), 0)
          FROM loyalty.transactions t
         WHERE t.card_id = {card} AND t.business_date = {day} AND t.txn_type = 'exchange'
           AND t.journal_id IS NOT NULL) AS {names[14]}
  FROM (SELECT 1) one
  LEFT JOIN loyalty.programs fp ON fp.code = {from_program}
  LEFT JOIN loyalty.programs tp ON tp.code = {to_program}
  LEFT JOIN LATERAL (SELECT * FROM loyalty.exchange_rates x
                      WHERE x.from_program = {from_program} AND x.to_program = {to_program}
                        AND x.effective_from <= now()
                      ORDER BY x.effective_from DESC, x.id DESC LIMIT 1) r ON true
  LEFT JOIN ledger.accounts ta ON ta.owner_kind = 'card' AND ta.owner_id = ({card})::text
                              AND ta.purpose = 'points' AND ta.asset = 'PTS:' || {to_program}
  LEFT JOIN ledger.accounts fd ON fd.owner_kind = 'operator' AND fd.owner_id = {from_program}
                              AND fd.purpose = 'exchange' AND fd.asset = 'PTS:' || {from_program}
  LEFT JOIN ledger.accounts td ON td.owner_kind = 'operator' AND td.owner_id = {to_program}
                              AND td.purpose = 'exchange' AND td.asset = 'PTS:' || {to_program}
"""


class Terms:
    """One exchange's terms (the columns of :data:`COLUMNS` as attributes).

    >>> Terms({"rate_num": 2}).rate_num
    2
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

"""Placement fees: what a merchant pays the operator for publishing a promotion.

One journal per promotion, key ``promo:<id>:fee``: Dr the merchant's money
clearing account / Cr the operator's fee income, in the currency of the
merchant's program. The journal records a loyalty transaction of type ``fee``
(``fee_minor`` = the fee, amount 0: a fee is no turnover), so end-of-day
clearing counts it in the merchant's fees (the counter-leg is fee income), the
settlement nets it, reconciliation proves it, and the statistics and the
export show it like any other fee. Its receipt is stored by reference, as the
switch's are, so each journal has exactly one request.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

from ledger.commands import Leg, Result, Status, transfer
from ledger.engine import Ledger, ReceiptRef

TXN_TYPE = "fee"
CHANNEL = "mall"  # promotions are the points mall's
FEE_MAX_MINOR = 100_000_000  # a bound: one promotion's fee is never more than this


def fee_key(promotion_id: int) -> str:
    """The idempotency key of a promotion's placement fee.

    >>> fee_key(42)
    'promo:42:fee'
    """
    return f"promo:{int(promotion_id)}:fee"


_ACCOUNTS_SQL = """
SELECT m.clearing_money_account_id, cur.fee_income_account_id, p.code AS program, p.currency
  FROM loyalty.merchants m
  JOIN loyalty.programs p ON p.code = m.program
  JOIN loyalty.currencies cur ON cur.numeric_code = p.currency
 WHERE m.merchant_id = $1
"""


async def charge(ledger: Ledger, pool: asyncpg.Pool | asyncpg.Connection, merchant_id: str, promotion_id: int,
                 fee_minor: int, operator_ref: str | None = None) -> Result:
    """Post the placement fee of promotion ``promotion_id`` (idempotent: a second call replays).

    Returns the engine's Result: ``ok`` (posted now or before) with the journal id, or why not.
    """
    if not 0 < fee_minor <= FEE_MAX_MINOR:
        return Result(Status.INVALID, detail=f"a placement fee must be 1..{FEE_MAX_MINOR}, got {fee_minor}")
    row = await pool.fetchrow(_ACCOUNTS_SQL, merchant_id)
    if row is None:
        return Result(Status.INVALID, detail=f"no merchant {merchant_id!r}")
    key = fee_key(promotion_id)
    txn: dict[str, Any] = {
        "type": TXN_TYPE, "merchant_id": merchant_id, "program": row["program"], "amount": 0,
        "currency": row["currency"], "points_delta": 0, "money_delta_minor": 0, "fee_minor": fee_minor,
        "channel": CHANNEL,
    }
    if operator_ref:
        txn["operator_ref"] = operator_ref[:64]
    cmd = transfer(key, [Leg(int(row["clearing_money_account_id"]), int(row["fee_income_account_id"]), fee_minor)],
                   metadata={"txn": txn, "promotion_id": int(promotion_id)})
    # The receipt names the journal (one request per journal, as reconciliation proves).
    ref = ReceiptRef(key, hashlib.sha256(f"{key}:{merchant_id}:{fee_minor}".encode()).digest())
    return await ledger.post(cmd, receipt_ref=ref)

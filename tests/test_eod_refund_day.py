"""A business day made only of refunds of an earlier day's earns still clears to zero.

Regression: settlement once posted the valued-points leg only when points issued
(or redeemed) were positive; a merchant whose day was a refund of yesterday's
earn has negative points issued, and its money clearing account was left off.
"""

from __future__ import annotations

import asyncpg
from ledger_support import ledger_settings

from ledger import eod
from ledger.engine import Ledger, Receipt
from ledger.loyalty import demo
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Reason, Request, TxnType


def _receipt(n: int):  # type: ignore[no-untyped-def]
    # What the switch stores with each posting (reconciliation wants one request per journal).
    return lambda outcome: Receipt(f"iso:T0000001:{n:06d}:0101120000", b"h" * 32, str(outcome.reason).encode())


def _req(n: int, amount: int, **kw: object) -> Request:
    return Request(key=f"T0000001|{n:06d}|0101120000", terminal_id="T0000001", merchant_id="M0001",
                   pan=demo.demo_pan(1), amount=amount, currency="156", rrn=f"{n:012d}", stan=f"{n:06d}",
                   **kw)  # type: ignore[arg-type]


async def test_refund_only_day_clears_and_reconciles(pool: asyncpg.Pool, tmp_path: object) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn, cards=1)
    async with Ledger(pool, ledger_settings()) as led:
        loy = Loyalty(led, pool)
        earn = await loy.execute(TxnType.EARN, _req(1, 50_000), receipt=_receipt(1))  # 500.00 CNY: 500 points
        assert earn.reason is Reason.APPROVED
    first = await eod.run(pool, None, tmp_path / "s", ledger_settings=ledger_settings())  # type: ignore[operator]
    assert first.ok, first.recon
    async with Ledger(pool, ledger_settings()) as led:
        loy = Loyalty(led, pool)
        refund = await loy.execute(TxnType.REFUND, _req(2, 20_000, account="00", original_rrn=f"{1:012d}"),
                                   receipt=_receipt(2))
        assert refund.reason is Reason.APPROVED, refund
    second = await eod.run(pool, None, tmp_path / "s", ledger_settings=ledger_settings())  # type: ignore[operator]
    assert second.ok, second.recon
    assert second.clearing is not None

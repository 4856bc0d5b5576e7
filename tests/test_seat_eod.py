"""A business day with web seat and terminal transactions, then end of day: the seat's
transactions are cleared, settled, reconciled and exported exactly as a terminal's, and the
seat, which never sends a 0500, has no batch for any check to miss."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from fixtures_daemon import BEAN_CHECK
from ledger_support import ledger_settings
from seat_support import PAN1, PAN2, approved, seeded

from ledger import batches, clearing, eod, export, reconcile, stats
from ledger.loyalty.outcomes import TxnType


async def test_a_day_with_seat_transactions_clears_settles_and_reconciles(pool: asyncpg.Pool,
                                                                           tmp_path: Path) -> None:
    async with seeded(pool) as w:
        # At M0001's seat and at its terminal T0000001; a redemption at M0002's seat.
        approved(await w.take("earn", PAN1, 12_345))  # 123 points
        approved(await w.take("topup", PAN1, 500))
        approved(await w.take("load", PAN1, 10_000))
        approved(await w.take("sv_purchase", PAN1, 2_500))
        voided = approved(await w.take("earn", PAN2, 5_000))
        approved(await w.take("void", PAN2, original_rrn=voided.rrn))
        refunded = approved(await w.take("earn", PAN2, 4_000))  # 40 points, 20 of them refunded
        approved(await w.take("refund", PAN2, 2_000, original_rrn=refunded.rrn))
        approved(await w.take("redeem", PAN1, 100, merchant="M0002"))
        assert not (await w.take("redeem", PAN2, 1_000)).approved
        approved(await w.take("inquiry", PAN1))
        assert (await w.pos(TxnType.EARN, PAN1, 8_000)).approved  # 80 points
        assert (await w.pos(TxnType.REDEEM, PAN1, 200)).approved
        day = await pool.fetchval("SELECT open_date FROM ledger.business_day")

        # The terminal closes its batch with the host's own totals; the seat has none to close.
        async with pool.acquire() as conn:
            host = await batches.host_totals(conn, "T0000001")
            closed = await batches.settle(conn, "T0000001", "M0001", "000001", host, "iso:T0000001:999999:0101120000")
        assert closed.in_balance and (host.credit_count, host.debit_count) == (1, 1)
        assert await pool.fetchval("SELECT count(*) FROM eod.terminal_batches WHERE terminal_id LIKE 'W%'") == 0

        report = await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
        assert report.ok, report.as_dict()
        assert report.recon is not None and "batch_totals_match" in report.recon.checks
        assert report.recon.cleared

        figures = {f["merchant_id"]: f for f in await clearing.figures(pool, day)}
        m1, m2 = figures["M0001"], figures["M0002"]
        # Seat and terminal alike, net of the void and the refund.
        assert m1["points_issued"] == 123 + 500 + 20 + 80
        assert m1["points_redeemed"] == 200 and m2["points_redeemed"] == 100
        assert (m1["sv_loaded_minor"], m1["sv_spent_minor"]) == (10_000, 2_500)
        assert (m1["void_count"], m1["refund_count"]) == (1, 1)
        fees = await pool.fetchval("SELECT sum(fee_minor) FROM loyalty.transactions "
                                   "WHERE business_date=$1 AND merchant_id='M0001'", day)
        assert m1["fees_minor"] == fees and fees > 0
        matrix = await clearing.matrix(pool, day)
        assert {"program": "ALLY", "issuer_id": "M0001", "redeemer_id": "M0002", "points": 100} in matrix
        settled = await pool.fetchval("SELECT count(*) FROM eod.clearing_merchants "
                                      "WHERE business_date=$1 AND journal_id IS NOT NULL", day)
        assert settled == 2
        m1_file = next(f.path for f in report.files if f.path.name == "merchant-M0001.csv")
        assert str(m1["net_minor"]) in m1_file.read_text()

        # Statistics group the seat under its terminal.
        by_terminal = {g["grp"]: g for g in (await stats.day_stats(pool, day, "terminal"))["groups"]}
        assert by_terminal["W0000001"]["approved"] == 9 and by_terminal["W0000001"]["declined"] == 1
        assert by_terminal["W0000002"]["approved"] == 1 and by_terminal["T0000001"]["approved"] == 2

        # The accountants' export carries the seat's journals, and bean-check proves its balances.
        bean = await export.beancount(pool, day)
        seat_keys = await pool.fetch("SELECT idempotency_key FROM loyalty.transactions "
                                     "WHERE channel='web' AND journal_id IS NOT NULL")
        assert len(seat_keys) == 9
        assert all(f'"{r["idempotency_key"]}"' in bean for r in seat_keys)
        path = tmp_path / "day.beancount"
        path.write_text(bean)
        proc = await asyncio.create_subprocess_exec(BEAN_CHECK, str(path), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        said, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, said.decode()

        again = await reconcile.run(pool, day)
        assert again.ok and again.cleared

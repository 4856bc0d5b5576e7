"""A captured mall order at end of day: cleared, settled, reconciled, exported and counted exactly
as a terminal's redemption (or stored-value purchase) of the same amount at another merchant."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
from fixtures_daemon import BEAN_CHECK
from ledger_support import ledger_settings
from mall_support import mall_world
from seat_support import PAN1, PAN2, approved

from ledger import clearing, eod, export, reconcile, stats
from ledger.loyalty.outcomes import TxnType


def _same(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k not in ("merchant_id", "journal_id")}


async def test_a_mall_order_clears_like_a_terminal_redemption(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with mall_world(pool) as m:
        # Symmetric days for M0001 (the mall) and M0002 (a terminal): each funds the other's buyer
        # at its own seat, then sells 300 points and 12,000 fen of stored value.
        approved(await m.w.take("topup", PAN2, 1_000, merchant="M0001"))
        approved(await m.w.take("load", PAN2, 20_000, merchant="M0001"))
        approved(await m.w.take("topup", PAN1, 1_000, merchant="M0002"))
        approved(await m.w.take("load", PAN1, 20_000, merchant="M0002"))
        good = await m.good(stock=5, points=150, minor=6_000)
        for pay in ("points", "money"):
            order = await m.place(good, PAN1, quantity=2, pay=pay)
            await m.mall.confirm(order["id"], "M0001")
        assert (await m.w.pos(TxnType.REDEEM, PAN2, 300, merchant="M0002", terminal="T0000002")).approved
        assert (await m.w.pos(TxnType.SV_PURCHASE, PAN2, 12_000, merchant="M0002", terminal="T0000002")).approved
        # A placed order (a pending hold) at the cut-over moves nothing and stays placed.
        pending = await m.place(good, PAN1, pay="points")
        day = await pool.fetchval("SELECT open_date FROM ledger.business_day")

        report = await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
        assert report.ok, report.as_dict()
        assert report.recon is not None and report.recon.cleared

        figures = {f["merchant_id"]: f for f in await clearing.figures(pool, day)}
        assert _same(figures["M0001"]) == _same(figures["M0002"])
        assert figures["M0001"]["points_redeemed"] == 300 and figures["M0001"]["sv_spent_minor"] == 12_000
        assert figures["M0001"]["fees_minor"] > 0
        settled = await pool.fetch("SELECT merchant_id, net_minor FROM eod.clearing_merchants "
                                   "WHERE business_date = $1 ORDER BY merchant_id", day)
        assert [r["net_minor"] for r in settled][:2] == [figures["M0001"]["net_minor"]] * 2
        files = {f.path.name: f.path.read_text() for f in report.files}
        assert str(figures["M0001"]["net_minor"]) in files["merchant-M0001.csv"]

        # Statistics: by merchant, the same; by channel, the mall's two.
        by_merchant = {g["grp"]: g for g in (await stats.day_stats(pool, day, "merchant"))["groups"]}
        assert _drop_grp(by_merchant["M0001"]) == _drop_grp(by_merchant["M0002"])
        by_channel = {g["grp"]: g for g in (await stats.day_stats(pool, day, "channel"))["groups"]}
        assert by_channel["mall"]["approved"] == 2

        bean = await export.beancount(pool, day)
        captures = await pool.fetch("SELECT idempotency_key FROM loyalty.transactions WHERE channel = 'mall'")
        assert len(captures) == 2 and all(f'"{r["idempotency_key"]}"' in bean for r in captures)
        path = tmp_path / "day.beancount"
        path.write_text(bean)
        proc = await asyncio.create_subprocess_exec(BEAN_CHECK, str(path), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        said, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, said.decode()

        again = await reconcile.run(pool, day)
        assert again.ok and again.cleared
        # The next day: the order placed before the cut-over is confirmed, and cleared then.
        assert (await m.mall.confirm(pending["id"], "M0001"))["status"] == "confirmed"


def _drop_grp(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "grp"}

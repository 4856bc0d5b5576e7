"""Placement fees: charged once per promotion when it is published (however many approvals
race), then cleared, settled, reconciled, exported and counted like every other fee."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import asyncpg
from fixtures_daemon import BEAN_CHECK
from ledger_support import ledger_settings
from seat_support import PAN1, approved, seeded

from ledger import clearing, eod, export, reconcile, stats
from ledger.audit import check_books
from ledger.loyalty import placement_fees
from portal import promotions

FEE = 1_500


def _draft(title: str = "Spring sale") -> promotions.Draft:
    now = dt.datetime.now(dt.UTC)
    return promotions.Draft(title, "Half price on every second book.", now - dt.timedelta(hours=1),
                            now + dt.timedelta(days=7))


async def test_a_day_with_a_placement_fee_clears_settles_and_reconciles(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with seeded(pool) as w:
        approved(await w.take("earn", PAN1, 10_000))  # an ordinary transaction of M0001 the same day
        async with pool.acquire() as conn:
            promo = await promotions.create(conn, "M0001", _draft(), "portal:m0001-admin")
        assert promo["status"] == "pending" and not promo["published"]

        # Two approvals at once: one fee journal, one publication.
        outcomes = await asyncio.gather(*(promotions.publish(pool, w.ledger, promo["id"], FEE, "portal:admin")
                                          for _ in range(3)))
        assert sum(o.fee_posted for o in outcomes) == 1
        assert [o.problem for o in outcomes].count(None) == 1
        after = await promotions.get(pool, promo["id"])
        assert after is not None and after["status"] == "approved" and after["published"]
        assert after["fee_minor"] == FEE and after["fee_journal_id"] is not None
        # A replay of the key posts nothing new.
        again = await placement_fees.charge(w.ledger, pool, "M0001", promo["id"], FEE)
        assert again.status.ok and again.journal_id == after["fee_journal_id"]
        assert await pool.fetchval("SELECT count(*) FROM ledger.journals WHERE idempotency_key = $1",
                                   placement_fees.fee_key(promo["id"])) == 1
        # An edit sends it back for approval; approving it again charges nothing more.
        async with pool.acquire() as conn:
            edited = await promotions.update(conn, promo["id"], "M0001", _draft("Spring sale, extended"))
        assert edited is not None and edited["status"] == "pending" and not edited["published"]
        second = await promotions.publish(pool, w.ledger, promo["id"], FEE, "portal:admin")
        assert second.problem is None and not second.fee_posted
        assert await pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'fee'") == 1

        day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
        earn_fee = await pool.fetchval("SELECT fee_minor FROM loyalty.transactions WHERE txn_type = 'earn'")
        report = await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
        assert report.ok, report.as_dict()
        m1 = {f["merchant_id"]: f for f in await clearing.figures(pool, day)}["M0001"]
        assert m1["fees_minor"] == earn_fee + FEE
        assert m1["net_minor"] == -(m1["issued_minor"] + earn_fee + FEE)
        recon = await reconcile.run(pool, day)
        assert recon.ok and recon.cleared, recon.problems

        by_type = {g["grp"]: g for g in (await stats.day_stats(pool, day, "type"))["groups"]}
        assert by_type["fee"]["fees_minor"] == FEE and by_type["fee"]["approved"] == 1
        bean = await export.beancount(pool, day)
        assert f'"{placement_fees.fee_key(promo["id"])}"' in bean
        path = tmp_path / "day.beancount"
        path.write_text(bean)
        proc = await asyncio.create_subprocess_exec(BEAN_CHECK, str(path), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        said, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, said.decode()
    assert await check_books(pool) == []


async def test_rejected_and_free_promotions_post_nothing(pool: asyncpg.Pool) -> None:
    async with seeded(pool) as w:
        async with pool.acquire() as conn:
            rejected = await promotions.create(conn, "M0002", _draft(), "portal:m0002-admin")
            free = await promotions.create(conn, "M0002", _draft("Free coffee"), "portal:m0002-admin")
            draft = await promotions.create(conn, "M0002", _draft("Not yet"), "portal:m0002-admin", submit=False)
        no = await promotions.publish(pool, w.ledger, rejected["id"], FEE, "portal:admin", note="Too loud",
                                      approve=False)
        assert no.promotion is not None and no.promotion["status"] == "rejected"
        yes = await promotions.publish(pool, w.ledger, free["id"], 0, "portal:admin")
        assert yes.promotion is not None and yes.promotion["published"] and yes.promotion["fee_journal_id"] is None
        assert (await promotions.publish(pool, w.ledger, draft["id"], FEE, "portal:admin")).problem == "not pending"
        assert await pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'fee'") == 0
        published = await promotions.list_published(pool)
        assert [p["id"] for p in published["promotions"]] == [free["id"]]
        assert await promotions.withdraw(pool, free["id"], "M0001") is False  # another merchant's
        assert await promotions.withdraw(pool, free["id"], "M0002") is True
        assert (await promotions.list_published(pool))["promotions"] == []
        assert (await promotions.get(pool, free["id"]))["status"] == "withdrawn"  # type: ignore[index]

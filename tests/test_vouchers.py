"""Points top-up cards: a batch made with hashed codes and a private file, sold (cleared at end of day
with the buyer's money), redeemed exactly once however many race, guessing locked out, and at
expiry the unredeemed cards' points moved to breakage; the revenue report and the export see it."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import os
import stat
from pathlib import Path

import asyncpg
import pytest
from fixtures_daemon import BEAN_CHECK
from ledger_support import ledger_settings
from seat_support import PAN1, approved, seeded

from ledger import clearing, eod, export, reconcile, revenue
from ledger.audit import check_books
from ledger.commands import Leg, Status, transfer
from ledger.loyalty import vouchers as v
from ledger.loyalty.outcomes import Channel

MASTER = bytes(range(32))
POLICY = v.GuessPolicy(failures_max=3, failure_window_s=600, lockout_s=600)


def _codes(path: Path) -> dict[str, str]:
    with path.open() as fh:
        return {row["serial"]: row["code"] for row in csv.DictReader(fh)}


async def _cards(pool: asyncpg.Pool) -> list[int]:
    return [int(r["id"]) for r in await pool.fetch("SELECT id FROM loyalty.cards ORDER BY id LIMIT 3")]


async def _account(pool: asyncpg.Pool, owner_kind: str, owner: str, purpose: str, asset: str) -> int:
    return int(await pool.fetchval("SELECT coalesce(sum(posted), 0) FROM ledger.accounts WHERE owner_kind = $1 "
                                   "AND owner_id = $2 AND purpose = $3 AND asset = $4",
                                   owner_kind, owner, purpose, asset))


async def _batch(pool: asyncpg.Pool, tmp_path: Path, count: int = 3, points: int = 500, price_minor: int = 450,
                 expires_on: dt.date | None = None) -> v.CreatedBatch:
    day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
    async with pool.acquire() as conn, conn.transaction():
        return await v.create_batch(conn, MASTER, "ALLY", points, count, price_minor,
                                    expires_on or day + dt.timedelta(days=30), tmp_path)


async def test_batch_file_is_private_and_only_hashes_are_stored(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with seeded(pool):
        made = await _batch(pool, tmp_path, count=4)
        assert stat.S_IMODE(os.stat(made.path).st_mode) == 0o600
        codes = _codes(made.path)
        assert sorted(codes) == made.serials and len(set(codes.values())) == 4
        stored = {r["serial"]: bytes(r["code_hash"]) for r in await pool.fetch("SELECT * FROM loyalty.vouchers")}
        for serial, code in codes.items():
            assert stored[serial] == v.code_hash(v.code_key(MASTER), serial, code)
            assert code.encode() not in stored[serial]
        with pytest.raises(v.VoucherError, match="1..100000 cards"):
            await _batch(pool, tmp_path, count=0)


async def test_sale_redemption_clearing_and_breakage(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with seeded(pool) as w:
        card1, card2, _ = await _cards(pool)
        day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
        made = await _batch(pool, tmp_path, count=3, points=500, price_minor=450, expires_on=day)
        codes = _codes(made.path)
        serials = made.serials
        who = v.Subjects(member_id=1)
        # Not sold yet: the right code is declined.
        unsold = await v.redeem(w.ledger, pool, MASTER, serials[0], codes[serials[0]], card1, who, POLICY)
        assert unsold.refusal is v.Refusal.NOT_SOLD
        approved(await w.take("earn", PAN1, 10_000))  # M0001's ordinary day, fee 50
        sold = await v.sell_batch(w.ledger, pool, made.batch_id, "M0001", "cli:test")
        assert sold["status"] == "sold" and sold["sale_journal_id"] is not None
        again = await v.sell_batch(w.ledger, pool, made.batch_id, "M0001")  # replay: nothing new
        assert again["sale_journal_id"] == sold["sale_journal_id"]
        with pytest.raises(v.VoucherError, match="not for sale"):
            await v.sell_batch(w.ledger, pool, made.batch_id, "M0002")
        assert await _account(pool, "operator", "156", v.SALES_PURPOSE, "CNY") == 1350
        assert await _account(pool, "operator", "ALLY", v.FLOAT_PURPOSE, "PTS:ALLY") == 1500

        before = await w.points(PAN1)
        ok = await v.redeem(w.ledger, pool, MASTER, serials[0], codes[serials[0]], card1, who, POLICY,
                            channel=Channel.API)
        assert ok.approved and ok.points == 500 and not ok.replayed
        assert await w.points(PAN1) == before + 500
        replay = await v.redeem(w.ledger, pool, MASTER, serials[0], codes[serials[0]], card1, who, POLICY)
        assert replay.approved and replay.replayed and await w.points(PAN1) == before + 500
        other = await v.redeem(w.ledger, pool, MASTER, serials[0], codes[serials[0]], card2, v.Subjects(), POLICY)
        assert other.refusal is v.Refusal.USED

        # End of day: the sale is in M0001's fees; the two unredeemed cards (valid through today) expire.
        report = await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
        assert report.ok, report.as_dict()
        assert report.voucher_breakage == {"ALLY": 1000}
        m1 = {f["merchant_id"]: f for f in await clearing.figures(pool, day)}["M0001"]
        assert m1["fees_minor"] == 50 + 1350
        assert m1["net_minor"] == -(m1["issued_minor"] + 50 + 1350)
        assert await _account(pool, "operator", "ALLY", v.FLOAT_PURPOSE, "PTS:ALLY") == 0
        assert await _account(pool, "operator", "ALLY", v.BREAKAGE_PURPOSE, "PTS:ALLY") == 1000
        statuses = {r["serial"]: r["status"] for r in await pool.fetch("SELECT serial, status FROM loyalty.vouchers")}
        assert statuses == {serials[0]: "redeemed", serials[1]: "expired", serials[2]: "expired"}
        late = await v.redeem(w.ledger, pool, MASTER, serials[1], codes[serials[1]], card1, who, POLICY)
        assert late.refusal is v.Refusal.EXPIRED
        # Running the step again moves nothing more.
        async with pool.acquire() as conn:
            assert await v.expire_day(conn, w.ledger, day) == {}
        assert await pool.fetchval("SELECT count(*) FROM ledger.journals WHERE idempotency_key LIKE "
                                   "'voucher:breakage:%'") == 1

        # Revenue: fees, card sales (day D), breakage (posted after the cut-over: day D+1) at 1 fen a point.
        rep = await revenue.report(pool, day, day + dt.timedelta(days=1))
        totals = {t["kind"]: t["amount_minor"] for t in rep["totals"]}
        assert totals == {"transaction_fees": 50, "voucher_sales": 1350, "voucher_breakage": 1000}
        sale_row = next(r for r in rep["rows"] if r["kind"] == "voucher_sales")
        assert sale_row["merchant_id"] == "M0001" and sale_row["program"] == "ALLY" and sale_row["day"] == str(day)

        for d in (day, day + dt.timedelta(days=1)):
            bean = export.beancount(pool, d)
            text = await bean
            assert "Income:Operator" in text
            path = tmp_path / f"{d}.beancount"
            path.write_text(text)
            proc = await asyncio.create_subprocess_exec(BEAN_CHECK, str(path), stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            said, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, said.decode()
        assert ":Voucher-sales " in (await export.beancount(pool, day))
        assert ":Voucher-breakage " in (await export.beancount(pool, day + dt.timedelta(days=1)))
        recon = await reconcile.run(pool, day)
        assert recon.ok, recon.problems
    assert await check_books(pool) == []


async def test_concurrent_redemptions_of_one_card_one_wins(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with seeded(pool) as w:
        cards = await _cards(pool)
        made = await _batch(pool, tmp_path, count=1, points=700)
        await v.sell_batch(w.ledger, pool, made.batch_id, "M0002")
        serial = made.serials[0]
        code = _codes(made.path)[serial]
        results = await asyncio.gather(*(v.redeem(w.ledger, pool, MASTER, serial, code, cards[i % 3],
                                                  v.Subjects(), POLICY) for i in range(9)))
        winners = {r.card_id for r in results if r.approved}
        assert len(winners) == 1
        assert all(r.refusal is v.Refusal.USED for r in results if not r.approved)
        assert await pool.fetchval("SELECT count(*) FROM ledger.journals WHERE idempotency_key = $1",
                                   v.redeem_key(serial)) == 1
        total = await pool.fetchval("SELECT sum(points_delta) FROM loyalty.transactions "
                                    "WHERE txn_type = 'voucher_redeem'")
        assert total == 700


async def test_redemption_overtaken_by_the_cut_over_is_refused_by_its_journal(pool: asyncpg.Pool,
                                                                              tmp_path: Path) -> None:
    """The redemption reads, then posts: a cut-over between the two leaves the card to the breakage."""
    async with seeded(pool) as w:
        card1 = (await _cards(pool))[0]
        day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
        made = await _batch(pool, tmp_path, count=2, points=100, expires_on=day)
        await v.sell_batch(w.ledger, pool, made.batch_id, "M0001")
        serial = made.serials[0]
        code = _codes(made.path)[serial]
        before = await w.points(PAN1)
        async with pool.acquire() as cut, cut.transaction():
            # The cut-over of the card's last day holds the business day (as business_day.cut_over
            # does): the redemption reads before it commits, and its posting waits for it.
            await cut.execute("SELECT 1 FROM ledger.business_day WHERE singleton FOR UPDATE")
            task = asyncio.create_task(v.redeem(w.ledger, pool, MASTER, serial, code, card1, v.Subjects(), POLICY))
            for _ in range(1000):
                if await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND wait_event_type = 'Lock'"):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the redemption's posting never waited for the cut-over")
            await cut.execute("UPDATE ledger.business_day SET open_date = $1 WHERE singleton",
                              day + dt.timedelta(days=1))
        late = await task
        assert late.refusal is v.Refusal.EXPIRED, late
        assert await pool.fetchval("SELECT count(*) FROM ledger.journals WHERE idempotency_key = $1",
                                   v.redeem_key(serial)) == 0
        assert await pool.fetchval("SELECT status FROM loyalty.vouchers WHERE serial = $1", serial) == "issued"
        assert await w.points(PAN1) == before

        # A journal posted straight under the card's key, with no read at all, is refused as well.
        float_ = await pool.fetchval("SELECT id FROM ledger.accounts WHERE owner_kind = 'operator' "
                                     "AND owner_id = 'ALLY' AND purpose = $1", v.FLOAT_PURPOSE)
        member = await pool.fetchval("SELECT id FROM ledger.accounts WHERE owner_kind = 'card' AND owner_id = $1 "
                                     "AND purpose = 'points' AND asset = 'PTS:ALLY'", str(card1))
        txn = {"type": v.REDEEM_TYPE, "card_id": card1, "program": "ALLY", "amount": 100, "currency": "156",
               "points_delta": 100, "money_delta_minor": 0, "fee_minor": 0, "channel": "api"}
        failed: list[bool] = []

        class Heard:  # what switchd_ledger_batches_failed_total is fed from
            def batch_queued(self, seconds: float) -> None:
                pass

            def batch_done(self, size: int, seconds: float, retries: int, batch_failed: bool) -> None:
                failed.append(batch_failed)

        w.ledger.observer = Heard()
        forced = await w.ledger.post(transfer(v.redeem_key(serial), [Leg(float_, member, 100)],
                                              metadata={"txn": txn, "voucher": serial}))
        assert forced.status is Status.DECLINED and forced.reason == "refused", forced
        assert "cannot be redeemed now" in (forced.detail or ""), forced
        assert failed and not any(failed)  # a refusal is no failed batch: nobody is paged at end of day

        # The end of day's breakage takes both cards.
        report = await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
        assert report.ok and report.voucher_breakage == {"ALLY": 200}, report.as_dict()
        assert await w.points(PAN1) == before
    assert await check_books(pool) == []


async def test_guessing_is_locked_out_per_subject(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with seeded(pool) as w:
        card1, card2, _ = await _cards(pool)
        made = await _batch(pool, tmp_path, count=1)
        await v.sell_batch(w.ledger, pool, made.batch_id, "M0001")
        serial = made.serials[0]
        code = _codes(made.path)[serial]
        guesser = v.Subjects(member_id=7, address="203.0.113.9", terminal_id="T0000001")
        for guess in ("0" * 16, "1" * 16, "x"):
            r = await v.redeem(w.ledger, pool, MASTER, serial, guess, card1, guesser, POLICY)
            assert r.refusal is v.Refusal.INVALID
        # Locked now, even with the right code; another member from the same address too.
        assert (await v.redeem(w.ledger, pool, MASTER, serial, code, card1, guesser, POLICY)).refusal \
            is v.Refusal.LOCKED
        neighbour = v.Subjects(member_id=8, address="203.0.113.9")
        assert (await v.redeem(w.ledger, pool, MASTER, serial, code, card2, neighbour, POLICY)).refusal \
            is v.Refusal.LOCKED
        rows = {(r["scope"], r["lockouts"]) for r in await pool.fetch("SELECT * FROM loyalty.voucher_failures")}
        assert rows == {("member", 1), ("address", 1), ("terminal", 1)}
        # What the metrics export: every failure and lockout counted in the database, per scope.
        totals = await v.guessing_totals(pool)
        assert {scope: locked for scope, (_failed, locked) in totals.items()} == \
            {"member": 1, "address": 1, "terminal": 1}
        assert all(failed >= POLICY.failures_max for failed, _locked in totals.values())
        # An unlocked member elsewhere redeems it.
        ok = await v.redeem(w.ledger, pool, MASTER, serial, code, card2, v.Subjects(member_id=9), POLICY)
        assert ok.approved


async def test_suspended_batch_declines_and_still_breaks(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with seeded(pool) as w:
        card1 = (await _cards(pool))[0]
        day = await pool.fetchval("SELECT open_date FROM ledger.business_day")
        made = await _batch(pool, tmp_path, count=2, points=100, expires_on=day)
        await v.sell_batch(w.ledger, pool, made.batch_id, "M0001")
        assert await v.suspend_batch(pool, made.batch_id)
        assert not await v.suspend_batch(pool, 999_999)
        serial = made.serials[0]
        r = await v.redeem(w.ledger, pool, MASTER, serial, _codes(made.path)[serial], card1, v.Subjects(), POLICY)
        assert r.refusal is v.Refusal.SUSPENDED
        report = await eod.run(pool, day, tmp_path, wait_lock_s=5, ledger_settings=ledger_settings())
        assert report.ok and report.voucher_breakage == {"ALLY": 200}
        shown = await v.show_batch(pool, made.batch_id)
        assert shown is not None and shown["expired"] == 2 and shown["status"] == "suspended"


async def test_old_failure_rows_are_purged_and_their_totals_kept(pool: asyncpg.Pool) -> None:
    """End of day drops the rows of subjects no longer counted; the metrics' totals never go down."""
    rows = [("address", "198.51.100.1", "10 days", None, 3, 1),  # old, lock long over: goes
            ("address", "198.51.100.2", "10 days", "1 day", 2, 1),  # old but still locked out: stays
            ("member", "42", "1 hour", None, 1, 0),  # in its window: stays
            ("terminal", "T0000009", "8 days", None, 4, 0)]  # old: goes
    for scope, subject, age, locked_for, total, lockouts in rows:
        await pool.execute(
            "INSERT INTO loyalty.voucher_failures(scope, subject, window_start, failures, failures_total, lockouts, "
            "locked_until) VALUES ($1, $2, now() - $3::text::interval, 1, $4, $5, now() + $6::text::interval)",
            scope, subject, age, total, lockouts, locked_for or "-1 day")
    before = await v.guessing_totals(pool)
    assert await v.purge_failures(pool) == 2
    left = {(r["scope"], r["subject"]) for r in await pool.fetch("SELECT * FROM loyalty.voucher_failures")}
    assert left == {("address", "198.51.100.2"), ("member", "42"), ("address", "*"), ("terminal", "*")}
    assert await v.guessing_totals(pool) == before == {"address": (5, 2), "member": (1, 0), "terminal": (4, 0)}
    # Again: nothing more to drop, and the folded totals add up rather than overwrite.
    await pool.execute("UPDATE loyalty.voucher_failures SET window_start = now() - interval '9 days', "
                       "locked_until = NULL WHERE subject = '198.51.100.2'")
    assert await v.purge_failures(pool) == 1
    assert await v.guessing_totals(pool) == before

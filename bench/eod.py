"""End-of-day benchmark (run on demand: `make bench-eod`; not a test).

Generates one business day of loyalty journals (default 1,000,000) over 1,000
merchants and 200,000 cards, then times ``eod run`` (cut-over, clearing,
settlement files, reconciliation) and a separate ``recon run``. Prints the
figures and writes bench/results/eod.json.

Points expiry: the program's points expire (``--expiry-lots N``, default 1,000,000; 0: no
expiry), so the generated credits and debits keep their lots through the trigger on
ledger.entries. After generation, each member account's lots are split into lots of earlier
dates (same total, set-based) until there are N live lots, all due: the end of day expires
every one of them (``expiry`` in its timings) and reconciliation proves the lots again.

Generation goes through ``ledger.post_batch`` itself (the engine's set-based
SQL function) in large batches on two connections, not through the engine's
queue: on this 2-core box the engine path (~8k commands/s) would take minutes
for a million journals. The commands are the ones the loyalty operations post
(same legs, same ``metadata.txn``, so loyalty.transactions is filled by its
trigger), plus one stored response per journal (what the switch writes), so
reconciliation has the full job to do. The mix: 55% purchase-earn, 10% top-up,
15% load, 12% redeem, 7% stored-value purchase, 1% reversals of earlier earns.

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432. The
database is created and dropped (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common
import asyncpg
from _common import ADMIN_DSN, ROOT

from ledger import db as ledger_db
from ledger import eod, migrate, reconcile
from ledger.loyalty import card_numbers, lots
from ledger.loyalty.programs import add_program
from switch.config import load_config
from switch.daemon import ledger_settings as configured_ledger_settings
from tools import harness

# The daemon's [ledger] defaults (switch/config.py); each run changes what it measures.
DEFAULT_LEDGER_SETTINGS = configured_ledger_settings(load_config(None, env={}))

FEE_BPS = 50
TARGET_S = 60.0


async def provision(conn: asyncpg.Connection, merchants: int, cards: int, expiry: bool = False) -> dict[str, Any]:
    """One alliance program, ``merchants`` merchants, ``cards`` cards with their two accounts (set-based)."""
    await add_program(conn, "ALLY", "Bench alliance", "alliance", issue_price_minor=2, redeem_value_minor=1)
    if expiry:
        await lots.set_expiry(conn, "ALLY", 1)
    await conn.execute(
        """INSERT INTO ledger.accounts(owner_kind, owner_id, purpose, asset, normal_side, limit_mode)
           SELECT 'merchant', 'M' || lpad(i::text, 6, '0'), 'clearing', a, 'debit', 'none'
             FROM generate_series(1, $1) i CROSS JOIN unnest(ARRAY['PTS:ALLY', 'CNY']) a""", merchants)
    await conn.execute(
        """INSERT INTO loyalty.merchants(merchant_id, name, program, earn_num, earn_den, fee_bps,
                                         clearing_points_account_id, clearing_money_account_id)
           SELECT m.owner_id, 'Bench ' || m.owner_id, 'ALLY', 1, 1, $1::jsonb, m.id, c.id
             FROM ledger.accounts m JOIN ledger.accounts c ON c.owner_id = m.owner_id AND c.asset = 'CNY'
            WHERE m.owner_kind = 'merchant' AND m.asset = 'PTS:ALLY' AND c.owner_kind = 'merchant'""",
        json.dumps({"default": FEE_BPS}))
    v = await card_numbers.vault(conn)
    sealed = [v.columns("621234" + str(n).zfill(10)) for n in range(1, cards + 1)]
    await conn.execute(  # a member of its own for each card
        "WITH m AS (INSERT INTO loyalty.members(name) SELECT '' FROM generate_series(1, $1) RETURNING id) "
        "INSERT INTO loyalty.cards(pan_hash, pan_sealed, pan_masked, expiry, member_id) SELECT s.h, s.b, s.m, '3012', x.id "
        "FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM m) x "
        "JOIN unnest($2::bytea[], $3::bytea[], $4::text[]) WITH ORDINALITY AS s(h, b, m, n) ON s.n = x.rn", cards,
        [c[0] for c in sealed], [c[1] for c in sealed], [c[2] for c in sealed])
    await conn.execute(
        """INSERT INTO ledger.accounts(owner_kind, owner_id, purpose, asset, normal_side, limit_mode)
           SELECT 'card', c.id::text, p.purpose, p.asset, 'credit', 'guarded'
             FROM loyalty.cards c CROSS JOIN (VALUES ('points', 'PTS:ALLY'), ('stored_value', 'CNY')) p(purpose, asset)""")
    ms = await conn.fetch("SELECT merchant_id, clearing_points_account_id AS p, clearing_money_account_id AS m "
                          "FROM loyalty.merchants ORDER BY merchant_id")
    cs = await conn.fetch(
        "SELECT c.id, pa.id AS p, sa.id AS s FROM loyalty.cards c "
        "JOIN ledger.accounts pa ON pa.owner_kind='card' AND pa.owner_id=c.id::text AND pa.purpose='points' "
        "JOIN ledger.accounts sa ON sa.owner_kind='card' AND sa.owner_id=c.id::text AND sa.purpose='stored_value' "
        "ORDER BY c.id")
    fee = await conn.fetchval("SELECT fee_income_account_id FROM loyalty.currencies WHERE numeric_code='156'")
    return {"merchants": [(r["merchant_id"], r["p"], r["m"]) for r in ms],
            "cards": [(r["id"], r["p"], r["s"]) for r in cs], "fee": fee}


class Generator:
    """Builds post_batch argument arrays for a realistic mix."""

    def __init__(self, world: dict[str, Any], seed: int) -> None:
        self.w = world
        self.rng = random.Random(seed)
        self.n = 0
        self.earns: list[tuple[int, dict[str, Any]]] = []  # (journal id, txn) candidates for reversal

    def batch(self, size: int) -> tuple[list[Any], int]:
        keys: list[str] = []
        hashes: list[bytes] = []
        kinds: list[str] = []
        refs: list[int | None] = []
        metas: list[str] = []
        leg_cmd: list[int] = []
        leg_d: list[int] = []
        leg_c: list[int] = []
        leg_a: list[int] = []
        rng = self.rng
        fee_acc = self.w["fee"]
        for i in range(1, size + 1):
            self.n += 1
            mid, m_pts, m_money = rng.choice(self.w["merchants"])
            card, c_pts, c_sv = rng.choice(self.w["cards"])
            tid = "T" + mid[1:]
            key = f"{tid}|{self.n:09d}|bench"
            roll = rng.random()
            legs: list[tuple[int, int, int]] = []
            txn: dict[str, Any] = {"rrn": f"{self.n:012d}", "stan": f"{self.n % 1_000_000:06d}", "terminal_id": tid,
                                   "merchant_id": mid, "card_id": card, "program": "ALLY", "currency": "156"}
            kind, ref = "transfer", None
            if roll < 0.01 and self.earns:
                jid, orig = self.earns.pop(rng.randrange(len(self.earns)))
                kind, ref = "reverse", jid
                txn.update(type="reversal", merchant_id=orig["merchant_id"], terminal_id=orig["terminal_id"],
                           card_id=orig["card_id"], amount=orig["amount"], points_delta=-orig["points_delta"],
                           fee_minor=-orig["fee_minor"], money_delta_minor=0, original_journal_id=jid,
                           undo_units=orig["amount"], undo_legs=[orig["points_delta"], orig["fee_minor"]])
            elif roll < 0.56:
                amount = rng.randrange(100, 50_000)
                pts, fee = amount // 100, amount * FEE_BPS // 10_000
                legs = [(m_pts, c_pts, pts), (m_money, fee_acc, fee)]
                txn.update(type="earn", amount=amount, points_delta=pts, money_delta_minor=0, fee_minor=fee)
            elif roll < 0.66:
                amount = rng.randrange(10, 2_000)
                fee = amount * 2 * FEE_BPS // 10_000
                legs = [(m_pts, c_pts, amount), (m_money, fee_acc, fee)]
                txn.update(type="topup", amount=amount, points_delta=amount, money_delta_minor=0, fee_minor=fee)
            elif roll < 0.81:
                amount = rng.randrange(1_000, 100_000)
                fee = amount * FEE_BPS // 10_000
                legs = [(m_money, c_sv, amount), (m_money, fee_acc, fee)]
                txn.update(type="load", amount=amount, points_delta=0, money_delta_minor=amount, fee_minor=fee)
            elif roll < 0.93:
                amount = rng.randrange(1, 60)
                fee = amount * FEE_BPS // 10_000
                legs = [(c_pts, m_pts, amount), (m_money, fee_acc, fee)]
                txn.update(type="redeem", amount=amount, points_delta=-amount, money_delta_minor=0, fee_minor=fee,
                           currency=None)
            else:
                amount = rng.randrange(100, 3_000)
                fee = amount * FEE_BPS // 10_000
                legs = [(c_sv, m_money, amount), (m_money, fee_acc, fee)]
                txn.update(type="sv_purchase", amount=amount, points_delta=0, money_delta_minor=-amount,
                           fee_minor=fee)
            legs = [leg for leg in legs if leg[2] > 0]
            keys.append(key)
            hashes.append(hashlib.sha256(key.encode()).digest())
            kinds.append(kind)
            refs.append(ref)
            metas.append(json.dumps({"txn": txn}, separators=(",", ":")))
            for d, c, a in legs:
                leg_cmd.append(i)
                leg_d.append(d)
                leg_c.append(c)
                leg_a.append(a)
        args = [keys, hashes, kinds, refs, [None] * size, [None] * size, metas, [False] * size,
                leg_cmd, leg_d, leg_c, leg_a]
        return args, size

    def remember(self, args: list[Any], rows: list[asyncpg.Record]) -> None:
        """Keep a few posted earns (with exactly two legs) as reversal candidates."""
        for r in rows:
            if r["status"] != "posted" or len(self.earns) > 2_000:
                continue
            txn = json.loads(args[6][r["idx"] - 1])["txn"]
            if txn["type"] == "earn" and txn["fee_minor"] > 0 and txn["points_delta"] > 0:
                self.earns.append((r["journal_id"], txn))


# Generation stops with an error rather than loop for ever when commands keep failing.
ATTEMPTS_PER_JOURNAL_MAX = 3
BATCH_ALL_DECLINED_MIN = 20
SQL = "SELECT idx, status, journal_id FROM ledger.post_batch($1,$2,$3,$4,$5,$6,$7::jsonb[],$8,$9,$10,$11,$12)"


async def generate(dsn: str, world: dict[str, Any], journals: int, batch_size: int, workers: int) -> dict[str, Any]:
    started = time.perf_counter()
    posted = 0
    attempted = 0
    reported = 0
    lock = asyncio.Lock()

    async def worker(n: int) -> None:
        nonlocal posted, attempted, reported
        gen = Generator(world, seed=n)
        gen.n = n * 1_000_000_000 // workers
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            while True:
                async with lock:
                    if posted >= journals:
                        return
                    if attempted > ATTEMPTS_PER_JOURNAL_MAX * journals:
                        raise RuntimeError(f"generation stalled: {attempted:,} commands attempted for "
                                           f"{posted:,} of {journals:,} journals posted")
                    size = min(batch_size, journals - posted)
                args, size = gen.batch(size)
                rows = await conn.fetch(SQL, *args, timeout=600)
                gen.remember(args, rows)
                batch_posted = sum(1 for r in rows if r["status"] == "posted")
                # A whole batch declined is a stall; the last few commands of a run may all decline
                # by chance (a redeem on an empty card), and the attempts' bound catches a slow stall.
                if not batch_posted and size >= BATCH_ALL_DECLINED_MIN:
                    statuses = sorted({str(r["status"]) for r in rows})
                    raise RuntimeError(f"a batch of {size} commands posted none (statuses: {statuses})")
                async with lock:
                    attempted += size
                    posted += batch_posted
                    if posted // 100_000 != reported // 100_000:
                        reported = posted
                        print(f"  generated {posted:,} journals in {time.perf_counter() - started:.1f}s", flush=True)
        finally:
            await conn.close()

    await asyncio.gather(*(worker(n) for n in range(workers)))
    elapsed = time.perf_counter() - started
    return {"journals": posted, "attempted": attempted, "elapsed_s": round(elapsed, 1),
            "journals_per_s": round(posted / elapsed, 1)}


# Live lots per account at most, when splitting (dates one day apart, ending the day before the open day).
LOTS_PER_ACCOUNT_MAX = 60

SPLIT_SQL = """
WITH acc AS (
    SELECT a.id, a.posted, least($1::integer, a.posted)::integer AS k
      FROM ledger.accounts a
     WHERE a.owner_kind = 'card' AND a.purpose = 'points' AND a.asset = 'PTS:ALLY' AND a.posted > 0
), gone AS (
    DELETE FROM loyalty.point_lots l USING acc WHERE l.account_id = acc.id
)
INSERT INTO loyalty.point_lots(account_id, expires_on, program, remaining)
SELECT acc.id, b.open_date - 1 - i, 'ALLY', acc.posted / acc.k + CASE WHEN i < acc.posted % acc.k THEN 1 ELSE 0 END
  FROM acc CROSS JOIN ledger.business_day b CROSS JOIN LATERAL generate_series(0, acc.k - 1) i
"""


async def split_lots(conn: asyncpg.Connection, target: int) -> dict[str, Any]:
    """Split every member account's points into up to ``per`` lots, all due, ``target`` in all (about)."""
    accounts = int(await conn.fetchval(
        "SELECT count(*) FROM ledger.accounts WHERE owner_kind='card' AND purpose='points' AND posted > 0"))
    per = min(LOTS_PER_ACCOUNT_MAX, max(1, -(-target // max(accounts, 1))))
    t = time.perf_counter()
    async with conn.transaction():
        await conn.execute(SPLIT_SQL, per)
    live = int(await conn.fetchval("SELECT count(*) FROM loyalty.point_lots WHERE remaining > 0"))
    return {"accounts": accounts, "lots_per_account_max": per, "live_lots": live,
            "split_s": round(time.perf_counter() - t, 1)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    name = harness.unique_database_name("switchd_bench_eod")
    dsn = await harness.create_database(ADMIN_DSN, name)
    figures: dict[str, Any] = {"journals_target": args.journals, "merchants": args.merchants, "cards": args.cards,
                               "generation_path": "ledger.post_batch in batches of "
                                                  f"{args.batch_size} on {args.workers} connections"}
    try:
        conn = await ledger_db.connect(dsn)
        await migrate.upgrade(conn)
        t = time.perf_counter()
        async with conn.transaction():
            world = await provision(conn, args.merchants, args.cards, args.expiry_lots > 0)
        figures["provision_s"] = round(time.perf_counter() - t, 1)
        print(f"provisioned {args.merchants} merchants, {args.cards} cards in {figures['provision_s']}s", flush=True)
        figures["generation"] = await generate(dsn, world, args.journals, args.batch_size, args.workers)
        print("generation:", json.dumps(figures["generation"]), flush=True)
        t = time.perf_counter()
        # What the switch stores with every posting: one response per request.
        await conn.execute(
            "INSERT INTO ledger.receipts(idempotency_key, content_hash, payload, journal_id) "
            "SELECT 'iso:' || idempotency_key, '\\x00', '{\"v\":1,\"fields\":{\"39\":\"00\"}}', journal_id "
            "FROM loyalty.transactions WHERE journal_id IS NOT NULL")
        await conn.execute("VACUUM ANALYZE")
        figures["receipts_and_analyze_s"] = round(time.perf_counter() - t, 1)
        figures["entries"] = int(await conn.fetchval("SELECT count(*) FROM ledger.entries"))
        if args.expiry_lots > 0:
            # The lots the trigger kept (one per account and day: the day's credits share a date).
            figures["lots_after_generation"] = int(await conn.fetchval("SELECT count(*) FROM loyalty.point_lots"))
            figures["expiry"] = await split_lots(conn, args.expiry_lots)
            await conn.execute("VACUUM ANALYZE loyalty.point_lots")
            print("expiry lots:", json.dumps(figures["expiry"]), flush=True)
        await conn.close()

        pool = await ledger_db.create_pool(dsn, 1, 4, timeout_statement_s=3600)
        with tempfile.TemporaryDirectory(prefix="swd-eod-") as out:
            t = time.perf_counter()
            report = await eod.run(pool, None, Path(out),
                                   ledger_settings=replace(DEFAULT_LEDGER_SETTINGS, timeout_post_s=600))
            figures["eod_run_s"] = round(time.perf_counter() - t, 2)
            figures["eod_timings_s"] = report.as_dict()["timings_s"]
            figures["eod_ok"] = report.ok
            figures["eod_failures"] = report.as_dict()["recon"]["failures"][:5]
            assert report.clearing is not None
            figures["settlement_journals"] = report.clearing.journals_posted
            figures["files"] = len(report.files)
            figures["expired"] = [e.__dict__ for e in report.expiry]
            t = time.perf_counter()
            again = await eod.run(pool, report.business_date, Path(out),
                                  ledger_settings=replace(DEFAULT_LEDGER_SETTINGS, timeout_post_s=600))
            figures["eod_rerun_s"] = round(time.perf_counter() - t, 2)
            figures["rerun_posted"] = again.clearing.journals_posted if again.clearing else None
        t = time.perf_counter()
        recon = await reconcile.run(pool, report.business_date)
        figures["recon_run_s"] = round(time.perf_counter() - t, 2)
        figures["recon_ok"] = recon.ok
        await pool.close()
        clearing_s = figures["eod_timings_s"]["clearing"]
        figures["targets"] = {"clearing_s_max": TARGET_S, "recon_s_max": TARGET_S,
                              "clearing_met": clearing_s <= TARGET_S,
                              "recon_met": figures["recon_run_s"] <= TARGET_S,
                              "eod_run_s_max": TARGET_S, "eod_run_met": figures["eod_run_s"] <= TARGET_S}
    finally:
        if not args.keep:
            await harness.drop_database(ADMIN_DSN, name)
        else:
            figures["database"] = name
    return figures


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--journals", type=int, default=1_000_000)
    ap.add_argument("--merchants", type=int, default=1_000)
    ap.add_argument("--cards", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--expiry-lots", type=int, default=1_000_000,
                    help="Live points lots due at the end of day (0: the program's points never expire).")
    ap.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eod.json"))
    args = ap.parse_args()
    figures = asyncio.run(main(args))
    print(json.dumps(figures, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figures = {**_common.provenance(), **figures}
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    cli()

"""Ledger posting benchmark (run on demand: `make bench-ledger`; not a test).

50,000 two-entry transfers from 256 concurrent callers over 10,000 accounts,
then the same with every transfer touching one hot merchant account; in the
same run, pgbench tpcb-like (scale 10, 8 clients, 20 s) against the same
PostgreSQL server, before and after (ratios use the mean of the two). Prints
the figures and writes bench/results/ledger.json.

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432.
It creates its own databases and drops them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import _common
from _common import ADMIN_DSN, ROOT, ledger_chart, run_pgbench

from ledger import accounts as A
from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.commands import Leg, Status, transfer
from ledger.engine import Ledger
from switch.config import load_config
from switch.daemon import ledger_settings as configured_ledger_settings
from tools import harness
from tools._stats import percentile

# The daemon's [ledger] defaults (switch/config.py); each run changes what it measures.
DEFAULT_LEDGER_SETTINGS = configured_ledger_settings(load_config(None, env={}))


async def run_transfers(led: Ledger, accounts: list[int], hot: int | None, total: int, callers: int,
                        tag: str) -> dict[str, float]:
    latencies_ms: list[float] = []
    statuses: dict[str, int] = {}
    counter = iter(range(total))
    rng = random.Random(42)

    async def caller() -> None:
        for n in counter:
            src = rng.choice(accounts)
            dst = hot if hot is not None else rng.choice(accounts)
            while dst == src:
                dst = rng.choice(accounts)
            cmd = transfer(f"{tag}-{n}", [Leg(src, dst, 1 + n % 5)])
            t0 = time.perf_counter()
            res = await led.post(cmd)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            statuses[str(res.status)] = statuses.get(str(res.status), 0) + 1

    batches_before = led.batches_total
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    latencies_ms.sort()
    posted = statuses.get(str(Status.POSTED), 0)
    return {
        "transfers": total,
        "posted": posted,
        "statuses": statuses,  # type: ignore[dict-item]
        "elapsed_s": round(elapsed, 3),
        "transfers_per_s": round(posted / elapsed, 1),
        # Nearest rank, as tools.loadgen reports them for bench/wire.py and bench/e2e.py.
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "mean_batch_size": round(total / max(1, led.batches_total - batches_before), 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    name = harness.unique_database_name("switchd_bench")
    dsn = await harness.create_database(ADMIN_DSN, name)
    results: dict[str, object] = {}
    try:
        source, accounts = await ledger_chart(dsn, args.accounts)
        pool = await ledger_db.create_pool(dsn, 2, 4)
        hot = await A.open_account(pool, "merchant", "hot", "PTS:BENCH", "credit", "none")
        settings = replace(DEFAULT_LEDGER_SETTINGS, batch_size_max=args.batch_size_max,
                           batch_linger_ms=args.linger_ms, batches_inflight_max=args.inflight,
                           queue_depth_max=100_000, timeout_post_s=60)
        async with Ledger(pool, settings) as led:
            fund = [transfer(f"fund-{a}", [Leg(source, a, 1_000_000)]) for a in accounts]
            funded = await led.post_many(fund)
            assert all(r.status is Status.POSTED for r in funded)
            results["uniform"] = await run_transfers(led, accounts, None, args.transfers, args.callers, "u")
            print("uniform:", json.dumps(results["uniform"]), flush=True)
            results["hot"] = await run_transfers(led, accounts, hot, args.transfers, args.callers, "h")
            print("hot:    ", json.dumps(results["hot"]), flush=True)
        problems = await check_books(pool)
        results["books_balance"] = not problems
        await pool.close()
    finally:
        await harness.drop_database(ADMIN_DSN, name)
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transfers", type=int, default=50_000)
    ap.add_argument("--callers", type=int, default=256)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--batch-size-max", type=int, default=512)
    ap.add_argument("--linger-ms", type=float, default=1.0)
    ap.add_argument("--inflight", type=int, default=2, help="ledger.batches_inflight_max")
    ap.add_argument("--pgbench-seconds", type=int, default=20)
    ap.add_argument("--skip-pgbench", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ledger.json"))
    args = ap.parse_args()
    # pgbench once before and once after the ledger runs; ratios use the mean: this shared
    # box's speed drifts by tens of percent within minutes.
    before = None if args.skip_pgbench else run_pgbench(ADMIN_DSN, args.pgbench_seconds, 8, 10)
    try:
        import uvloop

        figures = uvloop.run(main(args))
    except ImportError:
        figures = asyncio.run(main(args))
    if before is not None:
        pg = run_pgbench(ADMIN_DSN, args.pgbench_seconds, 8, 10)
        runs = [float(r.get("tps", 0) or 0) for r in (before, pg)]
        figures["pgbench_before"] = before
        figures["pgbench"] = pg
        figures["pgbench_tps_mean"] = round(sum(runs) / 2, 1)
        print("pgbench before:", json.dumps(before), flush=True)
        print("pgbench after:", json.dumps(pg), flush=True)
        tps = round(sum(runs) / 2, 1) if all(runs) else 0.0
        if tps:
            for kind, target in (("uniform", 1.5), ("hot", 1.2)):
                r = figures[kind]
                assert isinstance(r, dict)
                ratio = r["transfers_per_s"] / tps
                r["ratio_to_pgbench"] = round(ratio, 2)
                r["target_ratio"] = target
                r["meets_target"] = ratio >= target
    figures.update(_common.provenance())
    figures["median_note"] = "one run; p50 is the median latency"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k in ("uniform", "hot", "pgbench")}, indent=2))
    print(f"wrote {args.out}")

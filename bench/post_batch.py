"""What one ``ledger.post_batch`` call costs PostgreSQL, per call and per command (run on demand:
`make bench-post-batch`; not a test).

One connection, generic plans (as the daemon's pool), calls one after another: batches of 1, 8,
64 and 512 two-entry transfers, each from one operator account to one of 20,000 member accounts.
For each size it reads the backend's CPU seconds from /proc (PostgreSQL must run on this
machine; otherwise only wall time is reported) and the wall time per call, then fits
``cpu = fixed + per_command x size`` by least squares over the sizes. The sizes run twice, in
the order 1 8 64 512 512 64 8 1, and each size keeps its lower figure: this shared box's speed
moves within minutes. Prints the figures and writes bench/results/post_batch.json.

Why it exists: at half of ``make bench-e2e``'s rate batches are ~10 commands, not ~100, and
the fixed cost per call is what a batch of ten shares (docs/notes/2026-11-diary.md, Studying it).

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432. It creates its own
database and drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common
from _common import ADMIN_DSN, ROOT, ledger_chart, proc_cpu_s

from ledger import db as ledger_db
from ledger.audit import check_books
from tools import harness

SIZES = (1, 8, 64, 512)
MEMBERS = 20_000
# The daemon's own statement shape (ledger.engine), without the receipts: one call per batch.
POST_SQL = "SELECT * FROM ledger.post_batch($1, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9, $10, $11, $12, $13)"


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y over x.

    >>> fit([(1, 3.0), (2, 5.0), (3, 7.0)])
    (1.0, 2.0)
    """
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return round(mean_y - slope * mean_x, 6), round(slope, 6)


def _on_this_machine(pid: int) -> bool:
    """Whether the backend's /proc entry is readable here (PostgreSQL on this machine)."""
    return Path(f"/proc/{pid}/stat").exists()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    name = harness.unique_database_name("switchd_bench_pb")
    dsn = await harness.create_database(ADMIN_DSN, name)
    try:
        source, members = await ledger_chart(dsn, MEMBERS)
        pool = await ledger_db.create_pool(dsn, 1, 1, generic_plans=True)
        seq = 0

        async def call(c: Any, size: int) -> None:
            nonlocal seq
            keys, hashes, legs_to = [], [], []
            for _ in range(size):
                seq += 1
                keys.append(f"pb-{seq}")
                hashes.append(hashlib.sha256(keys[-1].encode()).digest())
                legs_to.append(members[seq % MEMBERS])
            rows = await c.fetch(POST_SQL, keys, hashes, ["transfer"] * size, [None] * size, [None] * size,
                                 [None] * size, ['{"bench": 1}'] * size, [False] * size,
                                 list(range(1, size + 1)), [source] * size, legs_to, [5] * size, [None] * size)
            assert all(r["status"] == "posted" for r in rows), rows[:1]

        results: dict[str, dict[str, float]] = {}
        async with pool.acquire() as c:
            pid = await c.fetchval("SELECT pg_backend_pid()")
            local = _on_this_machine(pid)
            # Journals enough for the plans and statistics of a table in use, then fresh statistics.
            for _ in range(20):
                await call(c, 512)
            await c.execute("ANALYZE")
            for size in (*SIZES, *reversed(SIZES)):
                calls = max(20, args.commands // size)
                cpu0, wall0 = proc_cpu_s(pid) if local else 0.0, time.perf_counter()
                for _ in range(calls):
                    await call(c, size)
                cpu_ms = (proc_cpu_s(pid) - cpu0) / calls * 1000 if local else None
                wall_ms = (time.perf_counter() - wall0) / calls * 1000
                best = results.get(str(size))
                if best is None or wall_ms < best["wall_ms_per_call"]:
                    results[str(size)] = {"calls": calls, "wall_ms_per_call": round(wall_ms, 3),
                                          **({"backend_cpu_ms_per_call": round(cpu_ms, 3)} if cpu_ms is not None else {})}
                print(f"batch of {size:3d}: {calls:4d} calls, wall {wall_ms:.3f} ms per call"
                      + (f", backend CPU {cpu_ms:.3f} ms" if cpu_ms is not None else ""), flush=True)
        books = await check_books(pool)
        await pool.close()
    finally:
        await harness.drop_database(ADMIN_DSN, name)
    figures: dict[str, Any] = {"sizes": results, "books_balance": not books}
    for key, label in (("backend_cpu_ms_per_call", "backend_cpu_ms"), ("wall_ms_per_call", "wall_ms")):
        points = [(int(size), r[key]) for size, r in results.items() if key in r]
        if len(points) == len(SIZES):
            fixed, per_command = fit(points)
            figures[f"{label}_fixed_per_call"] = fixed
            figures[f"{label}_per_command"] = per_command
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", type=int, default=4_000, help="commands per batch size (calls = this / size)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "post_batch.json"))
    args = ap.parse_args()
    figures = asyncio.run(measure(args))
    figures.update(_common.provenance())
    figures["started_note"] = "one connection, calls in a row, generic plans; each size its better of two"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "sizes"}, indent=2))
    print(f"wrote {args.out}")
    return 0 if figures["books_balance"] else 1


if __name__ == "__main__":
    sys.exit(main())

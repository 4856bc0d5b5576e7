"""Member API benchmark (run on demand: `make bench-api`; not a test).

1. A database with the demo programs and merchants, --clients members (one card
   each, a password, a large points top-up at a merchant's web seat) and one good
   per alliance merchant with a stock that cannot run out. Not measured.
2. The portal in a process of its own (portal.server.serve from this script, so
   that it has the [ledger] defaults: orders need the posting engine), on a free
   port, with the API's rate limits raised out of the way (every client comes from
   127.0.0.1, and the limits are not what is measured). The switch is not running:
   nothing else loads the database.
3. --clients app clients, each logged in as its own member (POST /sessions), spread
   over --client-procs processes (one Python process cannot drive HTTP at these
   rates), each client one keep-alive connection, back to back:
   GET /api/v1/me/balances for --duration-s, then POST /api/v1/orders (one point,
   a fresh Idempotency-Key each) for --duration-s.
4. The books are checked after (ledger.audit.check_books).

Prints and writes bench/results/api.json: requests/s, p50/p99 and the statuses of
each phase, the goals (balances >= 1,000/s with p99 <= 50 ms; orders >= 300/s with
p99 <= 100 ms) and whether each is met. The clients share the machine with the
portal and PostgreSQL: on a small box they take a good part of its CPU, and the
figures say what the whole system did. Exit 1 when the books do not balance.

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432. Its database
(switchd_bench_api_*) is dropped at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common
import asyncpg
import httpx

from ledger import db as ledger_db
from tools import harness

ADMIN_DSN = _common.ADMIN_DSN
ROOT = _common.ROOT
RESULTS = ROOT / "bench" / "results" / "api.json"
API = "/api/v1"
PASSWORD = "bench member pass 1"
TOPUP_POINTS = 1_000_000
GOOD_STOCK = 1_000_000_000
PORTAL_READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
GOALS = {"balances": {"requests_per_s_min": 1_000, "p99_ms_max": 50.0},
         "orders": {"requests_per_s_min": 300, "p99_ms_max": 100.0}}


def serve_portal(dsn: str, port: int) -> None:
    """The portal as the benchmark runs it: the [ledger] defaults, the API's rate limits out of the way."""
    import uvloop

    from portal.server import serve
    from portal.settings import ApiSettings, PortalSettings, load_secret
    from switch.config import load_config
    from switch.daemon import ledger_settings

    api = replace(ApiSettings(), rate_member_per_s=1e5, rate_member_burst=10**6, rate_address_per_s=1e5,
                  rate_address_burst=10**6)
    settings = replace(PortalSettings(), port=port, public_base_url=f"http://127.0.0.1:{port}",
                       secret=load_secret(None), api=api, limit_concurrency=1000, db_pool_size_max=20)
    uvloop.run(serve(settings, dsn, ledger_settings(load_config(None, env={}))))


async def build(dsn: str, clients: int) -> dict[str, Any]:
    """Programs, merchants, one card and login per client with points, goods. Not measured."""
    from ledger import migrate
    from ledger.engine import Ledger
    from ledger.loyalty import demo, mall, seat
    from ledger.loyalty.operations import Loyalty
    from ledger.loyalty.outcomes import Reason
    from portal.passwords import hash_password
    from switch.config import load_config
    from switch.daemon import ledger_settings

    t0 = time.perf_counter()
    conn = await ledger_db.connect(dsn)
    try:
        await migrate.upgrade(conn)
        async with conn.transaction():
            world = await demo.seed(conn, cards=clients)
            pw_hash = hash_password(PASSWORD)  # one hash for all: argon2id costs tens of ms on purpose
            await conn.execute(
                "INSERT INTO portal.member_logins(member_id, password_hash, must_change_password) "
                "SELECT member_id, $1, false FROM loyalty.cards", pw_hash)
        goods = [await mall.add_good(conn, m, mall.GoodForm("Bench good", "", 1, None, GOOD_STOCK))
                 for m in ("M0001", "M0002")]
    finally:
        await conn.close()
    pool = await ledger_db.create_pool(dsn, 1, 8)
    try:
        async with Ledger(pool, ledger_settings(load_config(None, env={}))) as ledger:
            loyalty = Loyalty(ledger, pool)
            for n, pan in enumerate(world["cards"]):
                r = await seat.take(loyalty, "M0001", "bench", f"bench-topup-{n:08d}", "topup", pan, TOPUP_POINTS)
                assert r.reason is Reason.APPROVED, r
        await pool.execute("ANALYZE")
    finally:
        await pool.close()
    return {"cards": world["cards"], "goods": goods, "setup_s": round(time.perf_counter() - t0, 1)}


class PortalProcess:
    """The portal as a child process (its own session: stopped by its process group)."""

    def __init__(self, dsn: str, work: Path) -> None:
        self.port = harness.free_port()
        self.log_path = work / "portal.log"
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--serve-portal", dsn, str(self.port)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PortalProcess:
        env = {**os.environ, "SWITCHD_PORTAL_SECRET": secrets.token_urlsafe(48)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + PORTAL_READY_TIMEOUT_S
        while not harness.answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the portal did not start: {self.log_path.read_text(errors='replace')[-1500:]}")
            time.sleep(0.2)
        return self

    def cpu_s(self) -> float:
        assert self.proc is not None
        return _common.proc_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=_common.STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def login_all(url: str, pans: list[str]) -> list[str]:
    """An access token per card's member (logins one after another: argon2id is slow on purpose)."""
    tokens = []
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for pan in pans:
            r = await client.post(f"{API}/sessions", json={"login": pan, "password": PASSWORD})
            r.raise_for_status()
            tokens.append(str(r.json()["access_token"]))
    return tokens


async def _client_loop(url: str, token: str, phase: str, goods: list[int], until: float,
                       latencies: list[float], statuses: dict[int, int]) -> None:
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits, headers=headers) as client:
        n = 0
        while time.monotonic() < until:
            t = time.perf_counter()
            try:
                if phase == "balances":
                    r = await client.get(f"{API}/me/balances")
                else:
                    r = await client.post(f"{API}/orders", json={"good_id": goods[n % len(goods)], "pay": "points"},
                                          headers={"idempotency-key": uuid.uuid4().hex})
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
            n += 1


def client_process(args: tuple[str, list[str], str, list[int], float]) -> tuple[list[float], dict[int, int]]:
    """One client process: its clients until ``until`` (a CLOCK_MONOTONIC time shared by the processes)."""
    url, tokens, phase, goods, until = args
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def run() -> None:
        await asyncio.gather(*(_client_loop(url, t, phase, goods, until, latencies, statuses) for t in tokens))

    asyncio.run(run())
    return latencies, statuses


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def run_phase(portal: PortalProcess, tokens: list[str], phase: str, goods: list[int], duration_s: float,
              procs: int) -> dict[str, Any]:
    """Every client, back to back, for ``duration_s``: rate, p50/p99, statuses, the portal's CPU."""
    chunks = [tokens[i::procs] for i in range(procs) if tokens[i::procs]]
    cpu0 = portal.cpu_s()
    start = time.monotonic() + 1.0  # the processes start, then all run to the same end
    until = start + duration_s
    with multiprocessing.get_context("spawn").Pool(len(chunks)) as workers:
        parts = workers.map(client_process, [(portal.url, c, phase, goods, until) for c in chunks])
    elapsed = max(time.monotonic() - start, duration_s)
    latencies = [x for lat, _ in parts for x in lat]
    statuses: dict[str, int] = {}
    for _, s in parts:
        for code, count in s.items():
            statuses[str(code)] = statuses.get(str(code), 0) + count
    ok = statuses.get("200" if phase == "balances" else "201", 0)
    return {"requests": len(latencies), "ok": ok, "requests_per_s": round(len(latencies) / elapsed, 1),
            "ok_per_s": round(ok / elapsed, 1), "p50_ms": pct(latencies, 0.50), "p99_ms": pct(latencies, 0.99),
            "http_statuses": statuses, "elapsed_s": round(elapsed, 1), "portal_cpu_s": round(portal.cpu_s() - cpu0, 1)}


async def books(dsn: str) -> dict[str, Any]:
    from ledger.audit import check_books

    conn = await asyncpg.connect(dsn)
    try:
        problems = await check_books(conn)
        orders = await conn.fetchval("SELECT count(*) FROM loyalty.orders WHERE channel = 'api'")
        holds = await conn.fetchval("SELECT count(*) FROM ledger.holds")
    finally:
        await conn.close()
    return {"books_balance": problems == [], "problems": [str(p) for p in problems][:10], "orders_placed": orders,
            "holds": holds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="8 clients, 5 s phases: for development")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--serve-portal", nargs=2, metavar=("DSN", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_portal:
        serve_portal(args.serve_portal[0], int(args.serve_portal[1]))
        return 0
    if args.quick:
        args.clients, args.duration_s = 8, 5.0
    results: dict[str, Any] = {**_common.provenance()}
    results.update({"clients": args.clients, "client_procs": args.client_procs, "duration_s": args.duration_s,
                    "quick": args.quick, "switch": "not running (idle)"})
    name = harness.unique_database_name("switchd_bench_api")
    dsn = harness.with_database(ADMIN_DSN, name)
    asyncio.run(harness.create_database(ADMIN_DSN, name))
    work = Path(tempfile.mkdtemp(prefix="switchd-bench-api-"))
    try:
        print(f"set-up (not measured): {args.clients} members with points, goods ...", flush=True)
        world = asyncio.run(build(dsn, args.clients))
        results["setup_s"] = world["setup_s"]
        with PortalProcess(dsn, work) as portal:
            tokens = asyncio.run(login_all(portal.url, world["cards"]))
            print(f"portal at {portal.url}; {args.clients} clients in {args.client_procs} processes, "
                  f"{args.duration_s:.0f} s per phase", flush=True)
            for phase in ("balances", "orders"):
                f = results[phase] = run_phase(portal, tokens, phase, world["goods"], args.duration_s,
                                               args.client_procs)
                print(f"  {phase:9} {f['requests']:7} requests {f['requests_per_s']:8.1f}/s  p50 {f['p50_ms']} ms  "
                      f"p99 {f['p99_ms']} ms  {f['http_statuses']}  portal CPU {f['portal_cpu_s']} s", flush=True)
        results["books"] = asyncio.run(books(dsn))
    finally:
        if args.keep:
            results["database"] = name
        else:
            asyncio.run(harness.drop_database(ADMIN_DSN, name))
        shutil.rmtree(work, ignore_errors=True)
    goals: dict[str, Any] = {}
    for phase, goal in GOALS.items():
        f = results.get(phase, {})
        rate, p99 = f.get("ok_per_s"), f.get("p99_ms")
        goals[phase] = {**goal, "ok_per_s": rate, "p99_ms": p99,
                        "met": rate is not None and p99 is not None and rate >= goal["requests_per_s_min"]
                        and p99 <= goal["p99_ms_max"] and f.get("ok") == f.get("requests")}
    results["goals"] = goals
    balance = bool(results["books"]["books_balance"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print("goals:", json.dumps(goals), flush=True)
    print(f"books: {'balance' if balance else 'DO NOT BALANCE'} ({results['books']['orders_placed']} orders); "
          f"wrote {out}")
    return 0 if balance else 1


if __name__ == "__main__":
    sys.exit(main())

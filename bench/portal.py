"""Portal benchmark (run on demand: `make bench-portal`; not a test).

1. A ledger of --journals journals (1,000,000 by default) built by the end-of-day
   benchmark's generator (bench/eod.py: ledger.post_batch in large batches, the
   loyalty operations' legs and transaction records, a stored response per
   journal), over --merchants merchants, their terminals and --cards cards; then
   one end of day (so settlement has a cleared day) and ANALYZE. Not measured.
2. The portal in a process of its own (`portal_command`: `switchd portal` when the
   CLI has it, else `python -m portal`), on a free port, over that database, with
   a secret generated for the run in its environment.
3. --users logged-in users (platform admins and operators, merchant admins and
   operators of different merchants, created through portal.users), each in its own
   loop with its own httpx client (one connection), for --duration-s: transaction
   search (GET with criteria), transaction detail, statistics, settlement and the
   trading seat (the purchase-earn form read for its request id and CSRF token,
   then posted), each user only the pages its role may use. Between two requests
   a user thinks for a random time of mean --think-s (0: back to back, the
   portal's maximum). The pages' paths are discovered from portal.app's ROUTES by
   route name (the PAGES table below); a page whose route does not exist is
   reported "missing". Then each page alone, --solo-requests requests one at a time
   by one user: its latency without the others' load (which page is slow by itself).
4. The switch's approved/s (bench/e2e.py's set-up and load generator, on a
   database of its own) without and with an idle portal beside it on the same
   database, in short alternated phases: without, with, with, without (--switch-rounds
   times); with the spread of the phases without it, and the idle portal's own CPU.

Prints and writes bench/results/portal.json: p50/p99 and requests/s per page and
overall, the goals (search, detail and seat p99 <= 100 ms; statistics p99 <= 500
ms; the switch with the portal within 5% of without) and whether each is met.
The books are checked after (ledger.audit.check_books); exit 1 when they do not
balance. --quick: 20,000 journals, 5 users, 10 s, for development.

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432. Its
databases (switchd_bench_portal_*, switchd_bench_portal_switch_*) are dropped at
the end (--keep keeps the portal's).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _common
import e2e
import eod as eod_bench
import httpx
from _common import ADMIN_DSN, ROOT, Daemon

from ledger import db as ledger_db
from ledger import eod
from ledger.loyalty import card_numbers
from ledger.loyalty.demo import demo_pan
from tools import harness

RESULTS = ROOT / "bench" / "results" / "portal.json"
USER_PASSWORD = "bench-portal-Pass-2026"  # long enough for any policy; the users exist for the run only
PORTAL_READY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0
SEAT_CARDS = 1_000  # Luhn-valid cards for the seat (the generator's card numbers have no check digit)
SEAT_PAN_FIRST = 500_000_000  # demo_pan(n) from here: 6212345..., never one of the generator's 62123400...

# What the users hit. "route": the route's name in portal.app.ROUTES (its path is discovered from
# it); "goal_p99_ms": the goal (None: none set); "weight": how often a user picks it.
# Path parameters are filled by name: rrn/ref -> a transaction's RRN, id/txn_id -> its id,
# day/business_date -> the cleared business day.
PAGES: dict[str, dict[str, Any]] = {
    "search": {"route": "transactions", "goal_p99_ms": 100.0, "weight": 30},
    "detail": {"route": "transaction_detail", "goal_p99_ms": 100.0, "weight": 25},
    "statistics": {"route": "stats", "goal_p99_ms": 500.0, "weight": 10},
    "settlement": {"route": "settlement", "goal_p99_ms": None, "weight": 5},
    "settlement_day": {"route": "settlement_day", "goal_p99_ms": None, "weight": 5},
    "seat": {"route": "seat", "goal_p99_ms": 100.0, "weight": 25},
}
# The seat's purchase-earn form: the fields posted besides the ones read from the form page.
SEAT_FORM = {"kind": "earn", "amount": "12.34"}
SEAT_FORM_READ = ("request_id", "csrf_token")  # hidden inputs of the form page, posted back
# Transaction search criteria, one picked per request ({mid}, {tid}, {rrn}, {today} filled in).
SEARCHES: tuple[dict[str, str], ...] = (
    {"go": "1"},
    {"type": "redeem"},
    {"terminal": "{tid}"},
    {"rrn": "{rrn}"},
    {"amount_min": "1000", "amount_max": "5000"},
    {"date_from": "{today}", "date_to": "{today}", "type": "load"},
    {"merchant": "{mid}"},
)
STATS_QUERIES: tuple[dict[str, str], ...] = ({}, {"period": "week"}, {"period": "month"})
# Roles in turn: a quarter of the users are the platform's.
ROLES = ("merchant_operator", "merchant_admin", "platform_admin", "merchant_operator", "merchant_admin",
         "merchant_operator", "platform_operator", "merchant_admin")
GOAL_SWITCH_RATIO_MIN = 0.95


# ---------------------------------------------------------------------- pages


def discover_pages() -> dict[str, dict[str, Any]]:
    """PAGES with each page's path and the roles that may use it, from portal.app.ROUTES and
    portal.permissions; ``path`` None when the route does not exist (yet)."""
    from portal.app import ROUTES
    from portal.permissions import allowed

    by_name = {name: (path, methods) for path, _endpoint, methods, name in ROUTES}
    roles = ("platform_admin", "platform_operator", "merchant_admin", "merchant_operator")
    out: dict[str, dict[str, Any]] = {}
    for page, spec in PAGES.items():
        path, methods = by_name.get(spec["route"], (None, []))
        out[page] = {**spec, "path": path, "methods": list(methods),
                     "roles": [r for r in roles if path and allowed(spec["route"], r)]}
    return out


def fill_path(path: str, txn: Mapping[str, Any], day: str) -> str:
    """A route's path with its parameters filled in (see PAGES)."""
    def value(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        if name in ("rrn", "ref", "txn", "key"):
            return str(txn["rrn"])
        if name in ("id", "txn_id", "transaction_id"):
            return str(txn["id"])
        if name in ("day", "business_date", "date"):
            return day
        raise KeyError(f"no value for the path parameter {name!r} of {path}")
    return re.sub(r"\{([^}]+)\}", value, path)


# ---------------------------------------------------------------------- the portal


def resolve_launcher(launcher: str, seat: bool) -> str:
    """``auto``: `switchd portal` (else `python -m portal`), unless the portal has a trading seat
    and neither gives it its ledger settings: then the bench launcher (the seat needs its engine)."""
    if launcher != "auto":
        return launcher
    candidates = [(name, source) for name, source in (("switchd", ROOT / "cli" / "portal.py"),
                                                      ("module", ROOT / "portal" / "__main__.py"))
                  if source.exists()]
    if seat:
        return next((name for name, source in candidates
                     if "ledger_settings" in source.read_text(encoding="utf-8")), "bench")
    return candidates[0][0] if candidates else "bench"


def portal_command(dsn: str, port: int, work: Path, launcher: str) -> tuple[list[str], str]:
    """How the portal is started (argv, launcher's name): the one place to change it.

    ``switchd``: `switchd portal`; ``module``: `python -m portal`; ``bench``:
    portal.server.serve from this script with the [ledger] defaults (the trading seat
    needs a posting engine). See resolve_launcher for ``auto``.
    """
    if launcher == "switchd":
        config = work / f"portal-{port}.toml"
        config.write_text(harness.render_config({
            "daemon": {"state_dir": str(work / "state"), "log_level": "warning"},
            "database": {"dsn": dsn},
            "portal": {"host": "127.0.0.1", "port": port}}, []), encoding="utf-8")
        return [str(Path(sys.executable).parent / "switchd"), "--config", str(config), "portal"], "switchd portal"
    if launcher == "module":
        return [sys.executable, "-m", "portal", "--dsn", dsn, "--port", str(port)], "python -m portal"
    return [sys.executable, str(Path(__file__).resolve()), "--serve-portal", dsn, str(port)], "bench launcher"


class PortalProcess:
    """The portal as a child process (its own session: stopped by its process group)."""

    def __init__(self, dsn: str, work: Path, launcher: str) -> None:
        self.port = harness.free_port()
        self.argv, self.launcher = portal_command(dsn, self.port, work, launcher)
        self.log_path = work / f"portal-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PortalProcess:
        env = {**os.environ, "SWITCHD_PORTAL_SECRET": secrets.token_urlsafe(48)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + PORTAL_READY_TIMEOUT_S
        while not harness.answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the portal did not start ({self.launcher}): "
                                   f"{self.log_path.read_text(errors='replace')[-1500:]}")
            time.sleep(0.2)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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


def serve_portal(dsn: str, port: int) -> None:
    """The bench launcher: `python -m portal` as it is, plus the [ledger] defaults for the seat."""
    import inspect

    import uvloop

    from portal.server import serve
    from portal.settings import PortalSettings, load_secret
    from switch.config import load_config
    from switch.daemon import ledger_settings

    settings = replace(PortalSettings(), port=port, public_base_url=f"http://127.0.0.1:{port}",
                       secret=load_secret(None))
    serve_any: Any = serve  # takes ledger_settings once the seat's engine is wired in
    if "ledger_settings" in inspect.signature(serve).parameters:
        uvloop.run(serve_any(settings, dsn, ledger_settings=ledger_settings(load_config(None, env={}))))
    else:
        uvloop.run(serve(settings, dsn))


# ---------------------------------------------------------------------- set-up


async def build_ledger(dsn: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The big day (eod.py's generator), one end of day, the seat's cards, ANALYZE. Not measured."""
    from ledger import migrate

    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    conn = await ledger_db.connect(dsn)
    try:
        await migrate.upgrade(conn)
        async with conn.transaction():
            world = await eod_bench.provision(conn, args.merchants, args.cards)
        figures["generation"] = await eod_bench.generate(dsn, world, args.journals, 250, 2)
        print(f"  generated: {figures['generation']}", flush=True)
        # What the switch stores with every posting (the detail page shows it), under the key the
        # switch gives it (specs.vocabulary.receipt_key_of: TID|STAN|F7 -> iso:TID:STAN:F7).
        await conn.execute(
            "INSERT INTO ledger.receipts(idempotency_key, content_hash, payload, journal_id) "
            "SELECT 'iso:' || replace(idempotency_key, '|', ':'), '\\x00', '{\"v\":1,\"fields\":{\"39\":\"00\"}}', journal_id "
            "FROM loyalty.transactions WHERE journal_id IS NOT NULL")
        # Luhn-valid cards for the seat, with the accounts the generator opens for its own.
        v = await card_numbers.vault(conn)
        sealed = [v.columns(demo_pan(SEAT_PAN_FIRST + n)) for n in range(SEAT_CARDS)]
        await conn.execute(  # a member of its own for each card
            "WITH m AS (INSERT INTO loyalty.members(name) SELECT '' FROM unnest($1::bytea[]) RETURNING id) "
            "INSERT INTO loyalty.cards(pan_hash, pan_sealed, pan_masked, expiry, member_id) SELECT p.h, p.b, p.m, "
            "'3012', x.id FROM unnest($1::bytea[], $2::bytea[], $3::text[]) WITH ORDINALITY AS p(h, b, m, n) "
            "JOIN (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM m) x ON x.rn = p.n",
            [c[0] for c in sealed], [c[1] for c in sealed], [c[2] for c in sealed])
        await conn.execute(
            """INSERT INTO ledger.accounts(owner_kind, owner_id, purpose, asset, normal_side, limit_mode)
               SELECT 'card', c.id::text, p.purpose, p.asset, 'credit', 'guarded'
                 FROM loyalty.cards c CROSS JOIN (VALUES ('points', 'PTS:ALLY'), ('stored_value', 'CNY')) p(purpose, asset)
                ON CONFLICT DO NOTHING""")  # the generator's cards have theirs
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    if not args.skip_eod:
        pool = await ledger_db.create_pool(dsn, 1, 4, timeout_statement_s=3600)
        try:
            t = time.perf_counter()
            report = await eod.run(pool, None, work / "eod",
                                   ledger_settings=replace(eod_bench.DEFAULT_LEDGER_SETTINGS, timeout_post_s=600))
            figures["eod_run_s"] = round(time.perf_counter() - t, 1)
            figures["eod_ok"] = report.ok
            figures["business_date_cleared"] = str(report.business_date)
            print(f"  end of day {report.business_date}: {figures['eod_run_s']} s, ok {report.ok}", flush=True)
        finally:
            await pool.close()
    conn = await ledger_db.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        figures["journals"] = int(await conn.fetchval("SELECT count(*) FROM ledger.journals"))
        figures["transactions"] = int(await conn.fetchval("SELECT count(*) FROM loyalty.transactions"))
    finally:
        await conn.close()
    figures["setup_s"] = round(time.perf_counter() - t0, 1)
    return figures


@dataclass
class User:
    login: str
    role: str
    merchant_id: str | None
    txns: list[dict[str, Any]] = field(default_factory=list)  # for detail and search criteria


async def create_users(dsn: str, count: int) -> list[User]:
    """``count`` users through portal.users (no forced change), each merchant user of its own
    merchant, with transactions of theirs to look at."""
    from portal.users import create_user

    conn = await ledger_db.connect(dsn)
    try:
        merchants = [r["merchant_id"] for r in await conn.fetch(
            "SELECT merchant_id FROM loyalty.merchants ORDER BY merchant_id LIMIT $1", count)]
        users: list[User] = []
        for n in range(count):
            role = ROLES[n % len(ROLES)]
            mid = merchants[n % len(merchants)] if role.startswith("merchant") else None
            user = User(f"bench{n:03d}", role, mid)
            await create_user(conn, user.login, f"Bench user {n}", USER_PASSWORD, role, mid,
                              must_change_password=False)
            rows = await conn.fetch(
                "SELECT id, rrn, merchant_id, terminal_id FROM loyalty.transactions "
                "WHERE ($1::text IS NULL OR merchant_id = $1) AND rrn IS NOT NULL "
                "ORDER BY id DESC LIMIT 200", mid) if mid else await conn.fetch(
                "SELECT id, rrn, merchant_id, terminal_id FROM loyalty.transactions "
                "TABLESAMPLE SYSTEM (1) WHERE rrn IS NOT NULL LIMIT 200")
            user.txns = [dict(r) for r in rows]
            users.append(user)
        return users
    finally:
        await conn.close()


async def seat_pans(dsn: str) -> list[str]:
    """The seat's card numbers (build_ledger's)."""
    conn = await ledger_db.connect(dsn)
    try:
        return [demo_pan(SEAT_PAN_FIRST + n) for n in range(SEAT_CARDS)
                if await card_numbers.card_id_by_number(conn, demo_pan(SEAT_PAN_FIRST + n)) is not None]
    finally:
        await conn.close()


# ---------------------------------------------------------------------- the users


HIDDEN = re.compile(r'<input[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"|<input[^>]*value="([^"]*)"[^>]*name="([a-z_]+)"')


def hidden_fields(html: str) -> dict[str, str]:
    """Every input's name and value in a page (the form's hidden request id and CSRF token)."""
    out: dict[str, str] = {}
    for m in HIDDEN.finditer(html):
        name, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        out.setdefault(name, value)
    return out


@dataclass
class Tally:
    """One page's requests: latencies of the answered ones, statuses, errors."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    bytes_total: int = 0

    def add(self, ms: float, status: int) -> None:
        self.latencies_ms.append(ms)
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def login(client: httpx.AsyncClient, user: User) -> None:
    page = await client.get("/login")
    token = hidden_fields(page.text).get("csrf_token", "")
    r = await client.post("/login", data={"csrf_token": token, "next": "/", "login": user.login,
                                         "password": USER_PASSWORD})
    if r.status_code not in (302, 303) or "login" in r.headers.get("location", "/login").split("?")[0]:
        raise RuntimeError(f"login of {user.login} failed: HTTP {r.status_code}")


async def hit(client: httpx.AsyncClient, page: str, spec: Mapping[str, Any], user: User, rng: random.Random,
              day: str, pans: list[str], tallies: dict[str, Tally]) -> None:
    """One request of ``page`` (the seat: its form read, then posted), timed into ``tallies``."""
    txn = rng.choice(user.txns)
    try:
        if page == "seat":
            t = time.perf_counter()
            form = await client.get(spec["path"], params={"kind": "earn"})
            tallies["seat_form"].add((time.perf_counter() - t) * 1000, form.status_code)
            read = hidden_fields(form.text)
            data = {**SEAT_FORM, "pan": rng.choice(pans), **{k: read.get(k, "") for k in SEAT_FORM_READ}}
            t = time.perf_counter()
            r = await client.post(spec["path"], data=data)
            tallies[page].add((time.perf_counter() - t) * 1000, r.status_code)
            outcome = ("approved" if r.status_code == 200 and "Approved" in r.text
                       else f"http {r.status_code}" if r.status_code != 200 else "declined")
            tallies[page].outcomes[outcome] = tallies[page].outcomes.get(outcome, 0) + 1
            return
        params: dict[str, str] = {}
        if page == "search":
            values = {"mid": txn["merchant_id"] or "", "tid": txn["terminal_id"] or "", "rrn": txn["rrn"] or "",
                      "today": dt.date.today().isoformat()}
            params = {k: v.format(**values) for k, v in rng.choice(SEARCHES).items()}
        elif page == "statistics":
            params = dict(rng.choice(STATS_QUERIES))
        t = time.perf_counter()
        r = await client.get(fill_path(spec["path"], txn, day), params=params)
        tallies[page].add((time.perf_counter() - t) * 1000, r.status_code)
        tallies[page].bytes_total += len(r.content)
    except httpx.HTTPError as exc:
        tallies[page].error(type(exc).__name__)


def client_for(base_url: str) -> httpx.AsyncClient:
    """A user's HTTP client: one connection, kept alive; redirects not followed."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=HTTP_TIMEOUT_S, follow_redirects=False)


async def user_loop(base_url: str, user: User, pages: dict[str, dict[str, Any]], day: str, pans: list[str],
                    tallies: dict[str, Tally], start: asyncio.Event, stop_at: list[float], think_s: float,
                    seed: int, ready: list[int]) -> None:
    """One user: log in, wait for the common start, then pick a page it may use, time it, think, again."""
    rng = random.Random(seed)
    mine = [p for p, spec in pages.items() if user.role in spec["roles"]]
    weights = [pages[p]["weight"] for p in mine]
    async with client_for(base_url) as client:
        await login(client, user)
        ready[0] += 1
        await start.wait()
        while time.monotonic() < stop_at[0] and mine:
            page = rng.choices(mine, weights)[0]
            await hit(client, page, pages[page], user, rng, day, pans, tallies)
            if think_s > 0:
                await asyncio.sleep(rng.expovariate(1 / think_s))


async def solo(portal: PortalProcess, users: list[User], pages: dict[str, dict[str, Any]], day: str,
               pans: list[str], requests_per_page: int) -> dict[str, Any]:
    """Each page alone, one request at a time, by a user of the widest scope that may use it (the
    platform's first): its latency without the other pages' load."""
    out: dict[str, Any] = {}
    rng = random.Random(0)
    for page, spec in pages.items():
        user = next((u for role in ("platform_admin", "platform_operator", "merchant_admin", "merchant_operator")
                     if role in spec["roles"] for u in users if u.role == role), None)
        if not spec["path"] or user is None:
            continue
        tallies = {page: Tally(), "seat_form": Tally()}
        async with client_for(portal.url) as client:
            await login(client, user)
            for _ in range(requests_per_page):
                await hit(client, page, spec, user, rng, day, pans, tallies)
        lat = tallies[page].latencies_ms
        out[page] = {"role": user.role, "requests": len(lat), "p50_ms": pct(lat, 0.5), "max_ms": pct(lat, 1.0),
                     "http_statuses": tallies[page].statuses,
                     "bytes_mean": round(tallies[page].bytes_total / len(lat)) if lat and page != "seat" else None}
    return out


def load_average_1m() -> float:
    """The machine's 1-minute load average (other users of this shared box included)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile of ``values`` (nearest rank), None when there are none."""
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(len(v) * q))], 1)


async def run_users(portal: PortalProcess, users: list[User], pages: dict[str, dict[str, Any]], day: str,
                    pans: list[str], duration_s: float, think_s: float) -> dict[str, Any]:
    """Every user's loop at once for ``duration_s`` (logins before the clock): figures per page."""
    tallies = {p: Tally() for p in [*pages, "seat_form"]}
    live = {p: spec for p, spec in pages.items() if spec["path"]}
    start = asyncio.Event()
    stop_at = [float("inf")]
    ready = [0]
    tasks = [asyncio.create_task(user_loop(portal.url, u, live, day, pans, tallies, start, stop_at, think_s,
                                           n, ready)) for n, u in enumerate(users)]
    while ready[0] < len(users):
        failed = [t for t in tasks if t.done()]
        if failed:
            for t in tasks:
                t.cancel()
            failed[0].result()  # raises the login's error
        await asyncio.sleep(0.1)
    cpu0 = portal.cpu_s()
    load0 = load_average_1m()
    t0 = time.monotonic()
    stop_at[0] = t0 + duration_s
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    portal_cpu_s = portal.cpu_s() - cpu0
    out: dict[str, Any] = {"elapsed_s": round(elapsed, 1), "portal_cpu_s": round(portal_cpu_s, 1),
                           "load_average_1m_before_after": [load0, load_average_1m()], "pages": {}}
    total = 0
    for page, tally in tallies.items():
        spec = pages.get(page, {"path": pages["seat"]["path"], "route": "seat", "goal_p99_ms": None})
        if not spec["path"]:
            out["pages"][page] = {"route": spec["route"], "status": "missing"}
            continue
        n = len(tally.latencies_ms)
        total += n if page != "seat_form" else 0
        ok = sum(v for k, v in tally.statuses.items() if k.startswith("2") or k.startswith("3"))
        figures: dict[str, Any] = {
            "route": spec["route"], "path": spec["path"],
            "status": "measured" if n else ("not used by these users' roles" if not spec.get("roles") else "no requests"),
            "requests": n, "requests_per_s": round(n / elapsed, 2), "p50_ms": pct(tally.latencies_ms, 0.5),
            "p99_ms": pct(tally.latencies_ms, 0.99), "max_ms": round(max(tally.latencies_ms), 1) if n else None,
            "http_statuses": tally.statuses, "errors": tally.errors, "ok_share": round(ok / n, 3) if n else None,
            "bytes_mean": round(tally.bytes_total / n) if n and page not in ("seat", "seat_form") else None}
        if tally.outcomes:
            figures["outcomes"] = tally.outcomes
        if n and ok < n:
            figures["status"] = "measured, with failures"
        out["pages"][page] = figures
    out["requests"] = total
    out["requests_per_s"] = round(total / elapsed, 1)
    return out


# ---------------------------------------------------------------------- the switch beside it


def switch_beside(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The switch's approved/s without and with an idle portal beside it (same database), alternated."""
    name = harness.unique_database_name("switchd_bench_portal_switch")
    dsn = harness.with_database(ADMIN_DSN, name)
    master_key_hex = _common.MASTER_KEY_HEX
    swork = work / "switch"
    swork.mkdir()
    asyncio.run(harness.create_database(ADMIN_DSN, name))
    phases: list[dict[str, Any]] = []
    try:
        with Daemon(swork, dsn, log_level="warning", connections_max=1000, pool_size_min=20, pool_size_max=20,
                    master_key_hex=master_key_hex) as daemon:
            daemon.cli("db", "upgrade")
            setup_args = argparse.Namespace(merchants=10, terminals=args.switch_connections,
                                            cards=args.switch_cards, fee_bps=50)
            setup = asyncio.run(e2e.provision(dsn, setup_args, bytes.fromhex(master_key_hex), swork))
            daemon.start()
            load = ("--connections", str(args.switch_connections), "--inflight", "2")
            e2e.loadgen(daemon.port, swork, "warmup", *load, "--duration-s", "3", timeout_s=120)
            asyncio.run(e2e.vacuum(dsn))
            portal: PortalProcess | None = None
            try:
                for n, beside in enumerate((False, True, True, False) * args.switch_rounds):
                    if beside and portal is None:
                        portal = PortalProcess(dsn, work, args.launcher).__enter__()
                        time.sleep(1.0)  # started, then idle
                    elif not beside and portal is not None:
                        portal.stop()
                        portal = None
                    cpu0 = portal.cpu_s() if portal else 0.0
                    summary, _ = e2e.loadgen(daemon.port, swork, f"phase-{n}", *load,
                                             "--duration-s", str(args.switch_phase_s),
                                             timeout_s=args.switch_phase_s + 120)
                    phase = {"portal_beside": beside, "approved_per_s": round(e2e.approved_per_s(summary), 1),
                             "p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
                             "errors": summary["errors"]}
                    if portal:
                        phase["portal_cpu_s"] = round(portal.cpu_s() - cpu0, 2)
                    phases.append(phase)
                    print(f"  switch {'with' if beside else 'without'} the portal beside it: "
                          f"{phase['approved_per_s']:.0f} approved/s, p99 {phase['p99_ms']} ms", flush=True)
            finally:
                if portal:
                    portal.stop()
            exit_code = daemon.stop()
        switch_books = asyncio.run(e2e.books(dsn))
    finally:
        asyncio.run(harness.drop_database(ADMIN_DSN, name))
    without_all = [p["approved_per_s"] for p in phases if not p["portal_beside"]]
    with_all = [p["approved_per_s"] for p in phases if p["portal_beside"]]
    without, with_ = statistics.fmean(without_all), statistics.fmean(with_all)
    ratio = round(with_ / without, 3) if without else None
    # The same setting's phases differ by this much on this shared box: a ratio inside it says nothing.
    spread = round(statistics.pstdev(without_all) / without, 3) if without else None
    idle_cpu_s = sum(p.get("portal_cpu_s", 0.0) for p in phases)
    return {"setup": setup, "connections": args.switch_connections, "inflight": 2, "phase_s": args.switch_phase_s,
            "phases": phases, "approved_per_s_without": round(without, 1), "approved_per_s_with": round(with_, 1),
            "ratio_with_to_without": ratio, "without_phases_relative_stdev": spread,
            "portal_idle_cpu_s_total": round(idle_cpu_s, 2),
            "portal_idle_cpu_share": round(idle_cpu_s / (len(with_all) * args.switch_phase_s), 4),
            "daemon_exit_code": exit_code, "books": switch_books}


# ---------------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journals", type=int, default=1_000_000)
    parser.add_argument("--merchants", type=int, default=1_000)
    parser.add_argument("--cards", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--think-s", type=float, default=0.5,
                        help="mean think time between a user's requests (exponential); 0: back to back")
    parser.add_argument("--solo-requests", type=int, default=10,
                        help="after the users, each page alone: this many requests one at a time")
    parser.add_argument("--switch-phase-s", type=float, default=15.0)
    parser.add_argument("--switch-rounds", type=int, default=2,
                        help="rounds of the four phases (without, with, with, without)")
    parser.add_argument("--switch-connections", type=int, default=50)
    parser.add_argument("--switch-cards", type=int, default=20_000)
    parser.add_argument("--skip-switch", action="store_true", help="leave out the switch's comparison")
    parser.add_argument("--skip-eod", action="store_true", help="no end of day in the set-up (no settlement day)")
    parser.add_argument("--launcher", choices=("auto", "switchd", "module", "bench"), default="auto",
                        help="how the portal starts (portal_command)")
    parser.add_argument("--quick", action="store_true",
                        help="20,000 journals, 5 users, 10 s, 5 s switch phases: for development")
    parser.add_argument("--keep", action="store_true", help="keep the portal's database")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--serve-portal", nargs=2, metavar=("DSN", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_portal:
        serve_portal(args.serve_portal[0], int(args.serve_portal[1]))
        return 0
    if args.quick:
        args.journals, args.users, args.duration_s = 20_000, 5, 10.0
        args.merchants, args.cards, args.switch_phase_s, args.switch_cards = 100, 5_000, 5.0, 2_000
        args.switch_connections, args.switch_rounds = 20, 1

    pages = discover_pages()
    args.launcher = resolve_launcher(args.launcher, bool(pages["seat"]["path"]))
    results: dict[str, Any] = {**_common.provenance()}
    results["date"] = results["started_at"]
    results["machine"]["pure"] = os.environ.get("SWITCHD_PURE") == "1"
    results.update({
        "journals_target": args.journals, "merchants": args.merchants, "cards": args.cards, "users": args.users,
        "duration_s": args.duration_s, "think_s_mean": args.think_s, "quick": args.quick,
        "pages_found": {p: spec["path"] or "missing" for p, spec in pages.items()},
    })
    print(f"pages: {results['pages_found']}", flush=True)
    name = harness.unique_database_name("switchd_bench_portal")
    dsn = harness.with_database(ADMIN_DSN, name)
    asyncio.run(harness.create_database(ADMIN_DSN, name))
    work = Path(tempfile.mkdtemp(prefix="switchd-bench-portal-"))
    try:
        print(f"set-up (not measured): {args.journals:,} journals ...", flush=True)
        results["setup"] = asyncio.run(build_ledger(dsn, args, work))
        results["journals"] = results["setup"]["journals"]
        users = asyncio.run(create_users(dsn, args.users))
        day = results["setup"].get("business_date_cleared") or dt.date.today().isoformat()
        pans = asyncio.run(seat_pans(dsn))
        results["roles"] = {r: sum(1 for u in users if u.role == r) for r in sorted({u.role for u in users})}
        with PortalProcess(dsn, work, args.launcher) as portal:
            results["launcher"] = portal.launcher
            print(f"portal ({portal.launcher}) at {portal.url}; {args.users} users for {args.duration_s:.0f} s",
                  flush=True)
            load = asyncio.run(run_users(portal, users, pages, day, pans, args.duration_s, args.think_s))
            print(f"each page alone, {args.solo_requests} requests one at a time ...", flush=True)
            results["solo"] = asyncio.run(solo(portal, users, pages, day, pans, args.solo_requests))
        results["load"] = load
        for page, f in load["pages"].items():
            if f.get("requests"):
                print(f"  {page:15} {f['requests']:6} requests {f['requests_per_s']:7.1f}/s  p50 {f['p50_ms']:7.1f} ms"
                      f"  p99 {f['p99_ms']:7.1f} ms  {f['http_statuses']}{' ' + str(f['outcomes']) if 'outcomes' in f else ''}",
                      flush=True)
            else:
                print(f"  {page:15} {f['status']}", flush=True)
        print(f"  overall         {load['requests']:6} requests {load['requests_per_s']:7.1f}/s; portal CPU "
              f"{load['portal_cpu_s']} s; load average {load['load_average_1m_before_after']}", flush=True)
        for page, f in results["solo"].items():
            print(f"  alone: {page:15} p50 {f['p50_ms']} ms, max {f['max_ms']} ms ({f['role']}, "
                  f"{f['bytes_mean']} bytes)", flush=True)
        results["books"] = asyncio.run(e2e.books(dsn))
        if not args.skip_switch:
            print("the switch without and with the portal beside it:", flush=True)
            sw = results["switch"] = switch_beside(args, work)
            print(f"  mean {sw['approved_per_s_without']:.0f} approved/s without, {sw['approved_per_s_with']:.0f} with: "
                  f"ratio {sw['ratio_with_to_without']} (phases without spread {sw['without_phases_relative_stdev']}); "
                  f"the idle portal used {sw['portal_idle_cpu_s_total']} s CPU", flush=True)
    finally:
        if args.keep:
            results["database"] = name
        else:
            asyncio.run(harness.drop_database(ADMIN_DSN, name))
        shutil.rmtree(work, ignore_errors=True)

    goals: dict[str, Any] = {}
    for page, spec in PAGES.items():
        if spec["goal_p99_ms"] is None:
            continue
        f = load["pages"].get(page, {})
        p99 = f.get("p99_ms")
        goals[page] = {"p99_ms_max": spec["goal_p99_ms"], "p99_ms": p99,
                       "met": (p99 is not None and p99 <= spec["goal_p99_ms"] and f.get("ok_share") == 1.0)
                       if f.get("requests") else "missing" if f.get("status") == "missing" else None}
    if "switch" in results:
        ratio = results["switch"]["ratio_with_to_without"]
        goals["switch_with_portal"] = {"ratio_min": GOAL_SWITCH_RATIO_MIN, "ratio": ratio,
                                       "without_phases_relative_stdev":
                                           results["switch"]["without_phases_relative_stdev"],
                                       "met": ratio is not None and ratio >= GOAL_SWITCH_RATIO_MIN}
    results["goals"] = goals
    balance = results["books"]["books_balance"] and results.get("switch", {}).get("books", {}).get(
        "books_balance", True)
    results["books_balance"] = balance
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print("goals:", json.dumps(goals), flush=True)
    print(f"books: {'balance' if balance else 'DO NOT BALANCE'}; wrote {out}")
    return 0 if balance else 1


if __name__ == "__main__":
    sys.exit(main())

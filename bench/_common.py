"""What the benchmarks share: the admin DSN, the daemon, the load generator, pgbench, samplers.

Imported as ``_common`` by the scripts (``python bench/x.py`` puts bench/ on the path). Databases,
ports and the daemon's life are tools/harness.py's, shared with the tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
# First on the path, ahead of bench/ itself: `ledger` must be the package, not bench/ledger.py.
sys.path.insert(0, str(ROOT))

from ledger.loyalty import card_numbers  # noqa: E402
from tools import harness  # noqa: E402 - importable once ROOT is on the path

ADMIN_DSN = os.environ.get("SWITCHD_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# One master key per benchmark run, for everything it starts: this process (cards it seeds; card
# numbers are sealed under the key), the daemons (passed explicitly) and the portals (inherited).
os.environ.setdefault("SWITCHD_MASTER_KEY", secrets.token_hex(32))
MASTER_KEY_HEX = os.environ["SWITCHD_MASTER_KEY"]
card_numbers.set_master_key(bytes.fromhex(MASTER_KEY_HEX))
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 300.0
PGBENCH_INIT_TIMEOUT_S = 600.0
PGBENCH_GRACE_S = 120.0  # on top of the run's own length


# ---------------------------------------------------------------------- databases


def provenance() -> dict[str, Any]:
    """What every results file starts with: when, which commit (``+dirty`` with uncommitted
    changes), and the machine (CPUs, Python, platform)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "unknown", ""
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": f"{head}+dirty" if dirty else head,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }


async def ledger_chart(dsn: str, members: int, asset: str = "PTS:BENCH") -> tuple[int, list[int]]:
    """Migrate the database at ``dsn`` and open a points asset, one operator account (debit side,
    no limit) and ``members`` member accounts (credit side, never below zero) in one statement:
    (operator account, member accounts). Set-up, not what a benchmark measures."""
    # Here, not at the top: the `ledger` package is importable only once ROOT is on the path.
    from ledger import accounts, migrate
    from ledger import db as ledger_db

    conn = await ledger_db.connect(dsn)
    try:
        await migrate.upgrade(conn)
        await accounts.ensure_asset(conn, asset, "points", 0)
        source = await accounts.open_account(conn, "operator", "bench", asset, "debit", "none")
        rows = await conn.fetch(
            "INSERT INTO ledger.accounts(owner_kind, owner_id, asset, normal_side, limit_mode) "
            "SELECT 'member', 'm' || g, $2, 'credit', 'non_negative' FROM generate_series(1, $1) g "
            "RETURNING id", members, asset)
        return source, [r["id"] for r in rows]
    finally:
        await conn.close()


# ---------------------------------------------------------------------- processes


async def pg_data_directory(dsn: str = ADMIN_DSN) -> str | None:
    """PostgreSQL's data directory (None when the role may not read it)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value = await conn.fetchval("SELECT current_setting('data_directory', true)")
        return str(value) if value else None
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's finished children."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (a supervisor's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def daemon_config(workdir: Path, dsn: str, *, port: int, log_level: str, connections_max: int,
                  pool_size_min: int, pool_size_max: int, metrics_port: int = 0, workers: int = 1,
                  ledger: dict[str, str] | None = None, database: dict[str, str] | None = None) -> str:
    """A switchd.toml: one nac2 POS listener, metrics off (or on metrics_port), idle timeout long
    enough for any run; ``ledger`` and ``database`` set more [ledger] and [database] keys (TOML
    values as text), the defaults otherwise."""
    sections: dict[str, dict[str, Any]] = {
        "daemon": {"state_dir": str(workdir / "state"), "log_level": log_level, "timeout_drain_s": 5.0,
                   "workers": workers},
        "database": {"dsn": dsn, "pool_size_min": pool_size_min, "pool_size_max": pool_size_max,
                     **{k: harness.TomlText(v) for k, v in (database or {}).items()}},
    }
    if ledger:
        sections["ledger"] = {k: harness.TomlText(v) for k, v in ledger.items()}
    sections["metrics"] = {"enabled": bool(metrics_port), "host": "127.0.0.1", "port": metrics_port or 9108}
    sections["portal"] = {"enabled": False}  # the switch alone is measured
    sections["security"] = {"unkeyed_terminals": "allow"}  # the simulated terminals may have no MAC key
    listener = {"name": "pos", "host": "127.0.0.1", "port": port, "framing": "nac2", "spec": "pos",
                "sign_on_required": True, "connections_max": connections_max,
                # Every simulated terminal comes from 127.0.0.1.
                "connections_per_address_max": connections_max,
                # Idle connections must survive the whole run.
                "timeout_idle_s": 600.0}
    return harness.render_config(sections, [listener])


class Daemon(harness.Daemon):
    """`switchd serve` as a child process (tools/harness.py); RSS and CPU read from /proc.

    A context manager: leaving it stops the daemon (``stop`` may also be called
    earlier, for the exit code; calling it again is harmless). Nest it inside the
    work directory's ``TemporaryDirectory`` so the daemon stops before its
    directory goes.
    """

    def __init__(self, workdir: Path, dsn: str, *, log_level: str, connections_max: int,
                 pool_size_min: int, pool_size_max: int, master_key_hex: str = "", metrics_port: int = 0,
                 workers: int = 1, ledger: dict[str, str] | None = None,
                 database: dict[str, str] | None = None) -> None:
        # At info level the "ready" line gives the ports (so the daemon may bind port 0);
        # above it there is no such line, so a port chosen here, answering, means ready.
        port = harness.free_port() if log_level != "info" else 0
        super().__init__(
            workdir,
            daemon_config(workdir, dsn, port=port, log_level=log_level, connections_max=connections_max,
                          pool_size_min=pool_size_min, pool_size_max=pool_size_max, metrics_port=metrics_port,
                          workers=workers, ledger=ledger, database=database),
            master_key_hex=master_key_hex or None, probe_ports={"pos": port} if port else None,
            ready_timeout_s=READY_TIMEOUT_S, stop_timeout_s=STOP_TIMEOUT_S, cli_timeout_s=CLI_TIMEOUT_S)
        self.port = port
        self.metrics_port = metrics_port
        self.workers = workers

    def start(self) -> Self:
        metrics_port = self.metrics_port
        super().start()
        self.port = self.ports["pos"]
        self.metrics_port = metrics_port  # the first worker's, as configured (the ready line may omit it)
        return self

    def scrape(self) -> dict[str, float]:
        """The daemon's /metrics as {'name{labels}': value}, summed over its workers (each serves its
        own, on consecutive ports); empty when metrics are off."""
        out: dict[str, float] = {}
        if not self.metrics_port:
            return out
        for port in range(self.metrics_port, self.metrics_port + self.workers):
            for line in self.metrics_text(port).splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name] = out.get(name, 0.0) + float(value)
        return out

    def cpu_s(self) -> float:
        """CPU seconds of the daemon: the process and, with workers, its worker processes."""
        return proc_cpu_s(self.pid) + sum(proc_cpu_s(pid) for pid in child_pids(self.pid))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


# ---------------------------------------------------------------------- load


def loadgen(port: int, json_out: Path, *args: str, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Run ``python -m tools.loadgen --quiet``; (its summary without "config", its CPU seconds)."""
    before = children_cpu_s()
    cmd = [sys.executable, "-m", "tools.loadgen", "--port", str(port), "--json-out", str(json_out),
           "--quiet", *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=timeout_s)
    cpu_s = children_cpu_s() - before
    if not json_out.exists():
        raise RuntimeError(f"loadgen failed ({res.returncode}): {res.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(json_out.read_text())
    summary.pop("config", None)
    return summary, cpu_s


# ---------------------------------------------------------------------- pgbench


def find_pgbench() -> str | None:
    """pgbench on PATH, else the newest under /usr/lib/postgresql/*/bin."""
    found = shutil.which("pgbench")
    if found:
        return found

    def version(p: Path) -> tuple[int, ...]:
        name = p.parent.parent.name
        return tuple(int(x) for x in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), key=version)
    return str(candidates[-1]) if candidates else None


def run_pgbench(admin_dsn: str, seconds: int, clients: int, scale: int,
                around_run: AbstractContextManager[object] | None = None,
                half_rate_seconds: int = 0) -> dict[str, Any]:
    """pgbench tpcb-like on a database of its own (created and dropped here).

    ``around_run`` is entered around the timed run only (not the initialisation), for
    callers that take CPU readings. A missing or failing pgbench gives ``{"error": ...}``.
    ``half_rate_seconds``: then run it again at half the TPS just measured (``-R``, every
    transaction logged) and report its latency percentiles and the disk meanwhile
    (``half_rate``): PostgreSQL's own tail at half load on this disk, beside ours.
    """
    exe = find_pgbench()
    if exe is None:
        return {"error": "pgbench not found"}
    name = harness.unique_database_name("switchd_pgbench")
    # A libpq URI as the database name; the password (if any) goes by environment, not argv.
    p = urlsplit(harness.with_database(admin_dsn, name))
    env = dict(os.environ)
    netloc = p.netloc
    if p.password is not None:
        env["PGPASSWORD"] = unquote(p.password)
        user = p.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        netloc = f"{user}@{p.netloc.rsplit('@', 1)[1]}"
    uri = urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))

    def pgbench(*args: str, timeout_s: float) -> str:
        return subprocess.run([exe, *args, uri], env=env, check=True, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout_s).stdout

    asyncio.run(harness.create_database(admin_dsn, name))
    try:
        pgbench("-i", "-q", "-s", str(scale), timeout_s=PGBENCH_INIT_TIMEOUT_S)
        with around_run if around_run is not None else nullcontext():
            out = pgbench("-c", str(clients), "-j", "2", "-T", str(seconds), "-b", "tpcb-like",
                          timeout_s=seconds + PGBENCH_GRACE_S)
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        half: dict[str, Any] | None = None
        if half_rate_seconds and m and float(m.group(1)) > 0:
            rate = float(m.group(1)) / 2
            data_directory = asyncio.run(pg_data_directory(admin_dsn))
            with tempfile.TemporaryDirectory(prefix="switchd-pgbench-") as logs:
                with DiskProbe(Path(logs), data_directory) as disk:
                    pgbench("-c", str(clients), "-j", "2", "-T", str(half_rate_seconds), "-b", "tpcb-like",
                            "-R", f"{rate:.1f}", "-l", f"--log-prefix={logs}/txn",
                            timeout_s=half_rate_seconds + PGBENCH_GRACE_S)
                half = {"rate_per_s": round(rate, 1), "seconds": half_rate_seconds,
                        **_pgbench_latencies(Path(logs)), "disk": disk.figures()}
                half["disk"].pop("max_ms_by_second", None)
                half["disk"].pop("reads_by_second", None)
    except subprocess.CalledProcessError as exc:
        return {"error": f"pgbench exited {exc.returncode}: {(exc.stderr or '')[-500:]}"}
    except subprocess.TimeoutExpired as exc:
        return {"error": f"pgbench did not finish within {exc.timeout:.0f} s"}
    finally:
        asyncio.run(harness.drop_database(admin_dsn, name))
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    result: dict[str, Any] = {"tps": float(m.group(1)) if m else 0.0,
                              "latency_avg_ms": float(lat.group(1)) if lat else 0.0,
                              "clients": clients, "scale": scale, "seconds": seconds}
    if half is not None:
        result["half_rate"] = half
    return result


def _pgbench_latencies(logs: Path) -> dict[str, Any]:
    """Percentiles from pgbench's per-transaction logs (``-l``; with ``-R`` the logged time runs
    from the transaction's scheduled start and the last column is the schedule lag).

    ``latency_from_schedule_ms`` is pgbench's own measure under ``-R`` and the one to compare
    with the load generator's: pgbench has only its 8 clients, so a transaction scheduled
    while all 8 wait on a stalled commit waits unstarted, where the load generator (100
    connections, up to 8 requests in flight on each) sends on time and the request waits in
    the switch. ``latency_ms`` leaves that wait out (from the actual start).
    """
    actual: list[float] = []
    scheduled: list[float] = []
    for path in logs.glob("txn*"):
        for line in path.read_text(encoding="ascii").splitlines():
            cols = line.split()
            if len(cols) < 7:
                continue
            total_us, lag_us = int(cols[2]), int(cols[6])
            scheduled.append(total_us / 1000)
            actual.append((total_us - lag_us) / 1000)

    def pct(values: list[float]) -> dict[str, float]:
        v = sorted(values)
        if not v:
            return {}
        return {"p50": round(v[len(v) // 2], 1), "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 1),
                "max": round(v[-1], 1)}

    return {"transactions": len(actual), "latency_ms": pct(actual), "latency_from_schedule_ms": pct(scheduled)}


# ---------------------------------------------------------------------- the disk


class Sampling:
    """A sampler that runs on its own thread while a phase runs: ``with Sampler(...) as s:``."""

    _stop: threading.Event
    _thread: threading.Thread

    def _start_thread(self, name: str, target: Callable[[], object]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=target, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class DiskProbe(Sampling):
    """How long the disk takes to make 8 KiB durable, sampled while a phase runs.

    Every commit waits for PostgreSQL's WAL to reach the disk (fdatasync), so a
    disk that stalls stalls every request in flight, whatever the software does.
    This writes 8 KiB and fdatasyncs it every ``interval_s`` (20 a second: light
    next to PostgreSQL's own flushes) in ``directory``, which should be on the
    same device as PostgreSQL's WAL (``same_device`` says whether it is). Each
    sample is keyed by the whole CLOCK_MONOTONIC second it ended in, as the load
    generator's latencies per second are, so the two can be lined up.
    """

    def __init__(self, directory: Path, pg_data_directory: str | None = None, interval_s: float = 0.05) -> None:
        self.path = directory / "disk_probe.bin"
        self.interval_s = interval_s
        self.same_device: bool | None = None
        self._device: tuple[int, int] | None = None  # PostgreSQL's data device (major, minor)
        if pg_data_directory:
            try:
                st_dev = os.stat(pg_data_directory).st_dev
                self.same_device = st_dev == os.stat(directory).st_dev
                self._device = (os.major(st_dev), os.minor(st_dev))
            except OSError:
                self.same_device = None
        self.samples_ms: list[tuple[int, float]] = []
        # Reads completed on PostgreSQL's device, read once a second: a page PostgreSQL needs
        # that is in neither its buffers nor the page cache is a read, and on a shared disk
        # a slow one. (This machine's kernel runs DAMON with a pageout scheme, which evicts
        # page-cache pages that go unused for a while, PostgreSQL's included.)
        self.reads: list[tuple[int, int]] = []
        self._start_thread("disk-probe", self._run)

    def _run(self) -> None:
        block = os.urandom(8192)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            i = 0
            second = -1
            while not self._stop.is_set():
                t0 = time.monotonic()
                if int(t0) != second:
                    second = int(t0)
                    reads = self._device_reads()
                    if reads is not None:
                        self.reads.append((second, reads))
                os.pwrite(fd, block, (i % 128) * 8192)
                os.fdatasync(fd)
                t1 = time.monotonic()
                self.samples_ms.append((int(t1), (t1 - t0) * 1000))
                i += 1
                self._stop.wait(max(0.0, self.interval_s - (t1 - t0)))
        finally:
            os.close(fd)
            self.path.unlink(missing_ok=True)

    def _device_reads(self) -> int | None:
        """Reads completed on PostgreSQL's device so far (/proc/diskstats), None if unknown."""
        if self._device is None:
            return None
        try:
            with open("/proc/diskstats", encoding="ascii") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and (int(fields[0]), int(fields[1])) == self._device:
                        return int(fields[3])
        except (OSError, ValueError):
            return None
        return None

    def figures(self) -> dict[str, Any]:
        """fdatasync latency: p50/p99/max, how many samples took over 100 ms, and the max per second."""
        values = sorted(ms for _, ms in self.samples_ms)
        if not values:
            return {"samples": 0}
        per_second: dict[int, float] = {}
        for second, ms in self.samples_ms:
            per_second[second] = max(ms, per_second.get(second, 0.0))
        # Reads during second s: the count read at the start of s+1 minus the one at the start of s.
        reads_by_second = {str(a[0]): b[1] - a[1] for a, b in itertools.pairwise(self.reads) if b[0] == a[0] + 1}
        return {
            "reads": sum(reads_by_second.values()) if reads_by_second else None,
            "reads_by_second": reads_by_second,
            "samples": len(values),
            "same_device_as_postgres": self.same_device,
            "fdatasync_ms": {"p50": round(values[len(values) // 2], 1),
                             "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1),
                             "max": round(values[-1], 1)},
            "over_100ms": sum(1 for v in values if v > 100.0),
            "max_ms_by_second": {str(k): round(v, 1) for k, v in sorted(per_second.items())},
        }


# ---------------------------------------------------------------------- what PostgreSQL waits on


# The daemon's statements, told apart by a phrase only each one has.
STATEMENT_KINDS = (("post_batch", "ledger.post_batch("), ("context", "AS q(pan_hash, merchant_id"),
                   ("unposted", "receipt_key, receipt_hash, receipt_payload, n)"))


class WaitSampler(Sampling):
    """What the daemon's PostgreSQL backends are doing, sampled while a phase runs.

    Every ``interval_s`` (20 a second: one small query, light next to the load) it reads
    ``pg_stat_activity`` for the active backends of ``application_name`` in ``database``,
    and counts each by statement (see STATEMENT_KINDS) and wait event. ``figures()``
    gives, per statement, the mean number of backends in each state: ``running`` has no
    wait event (on a CPU or waiting for one), ``Lock:transactionid`` waits for another
    transaction to end (a row it locked), ``IO:WALSync`` for its commit's flush.
    """

    def __init__(self, database: str, admin_dsn: str = ADMIN_DSN, application_name: str = "switchd",
                 interval_s: float = 0.05) -> None:
        # pg_stat_activity shows every database's backends: the admin connection will do.
        self.dsn, self.database, self.application_name = admin_dsn, database, application_name
        self.interval_s = interval_s
        self.samples = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.error: str | None = None
        self._start_thread("wait-sampler", lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT query, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = $1 AND application_name = $2 AND state = 'active'",
                    self.database, self.application_name, timeout=5)
                self.samples += 1
                for row in rows:
                    query = row["query"] or ""
                    kind = next((k for k, phrase in STATEMENT_KINDS if phrase in query), "other")
                    state = f"{row['wait_event_type']}:{row['wait_event']}" if row["wait_event_type"] else "running"
                    self.counts[(kind, state)] = self.counts.get((kind, state), 0) + 1
                await asyncio.sleep(self.interval_s)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            await conn.close()

    def figures(self) -> dict[str, Any]:
        """{statement: {"backends": mean active, state: mean backends in it, ...}}, largest first."""
        if not self.samples:
            return {"samples": 0, "error": self.error}
        out: dict[str, Any] = {"samples": self.samples}
        if self.error:
            out["error"] = self.error
        kinds = sorted({k for k, _ in self.counts}, key=lambda k: -sum(v for (q, _), v in self.counts.items() if q == k))
        for kind in kinds:
            states = sorted(((s, v) for (q, s), v in self.counts.items() if q == kind), key=lambda sv: -sv[1])
            out[kind] = {"backends": round(sum(v for _, v in states) / self.samples, 3),
                         **{s: round(v / self.samples, 3) for s, v in states}}
        return out

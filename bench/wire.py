"""Wire benchmark (run on demand: `make bench-wire`; not a test).

Starts a real `switchd serve` on its own fresh database, then drives it with
`python -m tools.loadgen` over TCP, exactly as terminals would:

1. throughput: 0800/301 echo over 50 pipelined, signed-on POS connections
   (closed loop, --inflight each) for --duration-s; round trips/s, p50/p99,
   daemon RSS and the CPU both sides used (on a small machine the Python load
   generator, not the daemon, may be the limit: the CPU figures say which);
2. connection scale: 10,000 idle connections held open for --scale-duration-s
   while one terminal echoes at --scale-rate/s; that terminal's p50/p99 and
   daemon RSS with all connections open.

Prints the figures and writes bench/results/wire.json.

Server: $SWITCHD_BENCH_DSN (an admin DSN), else postgres@127.0.0.1:5432. It
creates its own database (switchd_wire_<random>) and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SWITCHD = str(BIN / "switchd")
ADMIN_DSN = os.environ.get("SWITCHD_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = ROOT / "bench" / "results" / "wire.json"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
MERCHANT = "MBENCH01"


def with_db(dsn: str, name: str) -> str:
    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def add_terminals(dsn: str, prefix: str, count: int) -> None:
    # Plain rows (no MAC keys): echo is never MACed, so the keystore is not involved.
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(
            "INSERT INTO switch.terminals(terminal_id, merchant_id) "
            "SELECT $1 || lpad(i::text, $2, '0'), $3 FROM generate_series(1, $4) AS i "
            "ON CONFLICT DO NOTHING",
            prefix, 8 - len(prefix), MERCHANT, count,
        )
    finally:
        await conn.close()


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft fd limit (children, the daemon included, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def write_config(path: Path, dsn: str, connections_max: int, log_level: str, port: int) -> None:
    path.write_text(
        "\n".join([
            "[daemon]",
            f'state_dir = "{path.parent / "state"}"',
            f'log_level = "{log_level}"',
            "timeout_drain_s = 5.0",
            "",
            "[database]",
            f'dsn = "{dsn}"',
            "pool_size_min = 2",
            "pool_size_max = 8",
            "",
            "[metrics]",
            "enabled = false",
            "",
            "[[listeners]]",
            'name = "pos"',
            'host = "127.0.0.1"',
            f"port = {port}",
            'framing = "nac2"',
            'spec = "pos"',
            "sign_on_required = true",
            f"connections_max = {connections_max}",
            # Idle connections must survive the whole scale run.
            "timeout_idle_s = 600.0",
            "",
        ]),
        encoding="utf-8",
    )


class Daemon:
    """`switchd serve` as a child process; RSS and CPU read from /proc."""

    def __init__(self, workdir: Path, dsn: str, connections_max: int, log_level: str) -> None:
        self.config = workdir / "switchd.toml"
        # A port chosen here (not 0) so that readiness can be seen at any log level.
        self.port = _free_port() if log_level != "info" else 0
        write_config(self.config, dsn, connections_max, log_level, self.port)
        self.log_path = workdir / "daemon.log"
        self.env = {**os.environ, "SWITCHD_MASTER_KEY": secrets.token_hex(32)}
        self.env.pop("SWITCHD_CONFIG", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def cli(self, *args: str) -> None:
        subprocess.run([SWITCHD, "--config", str(self.config), *args], env=self.env, check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([SWITCHD, "--config", str(self.config), "serve"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "ready":
                    self.ports = {k: int(v) for k, v in event["listeners"].items()}
                    return
            # Above info level there is no "ready" line: the bound port answering is enough.
            if self.port and _answers(self.port):
                self.ports = {"pos": self.port}
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("daemon not ready in time")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


class RssSampler:
    """Peak daemon RSS while a phase runs (sampled twice a second)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak_mb = max(self.peak_mb, self.daemon.rss_mb())
            except OSError:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def loadgen(port: int, json_out: Path, *args: str, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Run the load generator; return its summary and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "tools.loadgen", "--port", str(port), "--json-out", str(json_out),
           "--quiet", *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not json_out.exists():
        raise RuntimeError(f"loadgen failed ({res.returncode}): {res.stderr[-2000:]}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary: dict[str, Any] = json.loads(json_out.read_text())
    summary.pop("config", None)
    return summary, round(cpu_s, 2)


def throughput_phase(d: Daemon, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = d.ports["pos"]
    common = ["--connections", str(args.connections), "--inflight", str(args.inflight),
              "--tid-prefix", "BT", "--mix", "echo=1", "--timeout-s", "10"]
    loadgen(port, work / "warmup.json", *common, "--duration-s", "2", timeout_s=120)
    cpu_before = d.cpu_s()
    with RssSampler(d) as rss:
        summary, client_cpu_s = loadgen(port, work / "throughput.json", *common,
                                        "--duration-s", str(args.duration_s),
                                        timeout_s=args.duration_s + 120)
    elapsed_s = summary["elapsed_s"]
    return {
        "connections": args.connections,
        "inflight_per_connection": args.inflight,
        "duration_s": elapsed_s,
        "round_trips": summary["responses"],
        "round_trips_per_s": summary["throughput_rps"],
        "latency_ms": summary["latency_ms"],
        "response_codes": summary["response_codes"],
        "errors": summary["errors"],
        "daemon_rss_mb": round(d.rss_mb(), 1),
        "daemon_rss_peak_mb": round(rss.peak_mb, 1),
        "daemon_cpu_s": round(d.cpu_s() - cpu_before, 2),
        "loadgen_cpu_s": client_cpu_s,
    }


def scale_phase(d: Daemon, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = d.ports["pos"]
    rss_before_mb = d.rss_mb()
    with RssSampler(d) as rss:
        summary, _cpu = loadgen(
            port, work / "scale.json", "--idle-connections", str(args.idle_connections),
            "--connections", "1", "--inflight", "1", "--rate", str(args.scale_rate),
            "--duration-s", str(args.scale_duration_s), "--tid-prefix", "SC", "--timeout-s", "10",
            timeout_s=args.scale_duration_s + 300,
        )
    conns = summary["connections"]
    return {
        "idle_connections_requested": args.idle_connections,
        "idle_connections_held": conns["idle_open"],
        "idle_connections_lost": conns["idle_lost"],
        "duration_s": summary["elapsed_s"],
        "echo_rate_per_s": args.scale_rate,
        "echoes": summary["responses"],
        "latency_ms": summary["latency_ms"],
        "errors": summary["errors"],
        "daemon_rss_before_mb": round(rss_before_mb, 1),
        "daemon_rss_peak_mb": round(rss.peak_mb, 1),
        "daemon_rss_per_idle_connection_kb": round(
            (rss.peak_mb - rss_before_mb) * 1024 / max(1, conns["idle_open"]), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--scale-duration-s", type=float, default=60.0)
    parser.add_argument("--scale-rate", type=float, default=50.0)
    parser.add_argument("--skip-scale", action="store_true")
    # The production default logs one line per request; that cost is part of the figure.
    parser.add_argument("--log-level", choices=["info", "warning"], default="info")
    args = parser.parse_args()

    nofile = raise_nofile(args.idle_connections + args.connections + 1024)
    if not args.skip_scale and nofile < args.idle_connections + 512:
        print(f"RLIMIT_NOFILE is {nofile}: too low for {args.idle_connections} connections", file=sys.stderr)
        return 2
    name = f"switchd_wire_{uuid.uuid4().hex[:10]}"
    dsn = with_db(ADMIN_DSN, name)
    results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "cpus": os.cpu_count(), "rlimit_nofile": nofile,
                               "daemon_log_level": args.log_level}
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    daemon: Daemon | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="switchd-wire-") as tmp:
            work = Path(tmp)
            daemon = Daemon(work, dsn, connections_max=args.idle_connections + args.connections + 16,
                            log_level=args.log_level)
            daemon.cli("db", "upgrade")
            asyncio.run(add_terminals(dsn, "BT", args.connections))
            asyncio.run(add_terminals(dsn, "SC", 1))
            daemon.start()
            results["daemon_rss_idle_mb"] = round(daemon.rss_mb(), 1)
            print(f"daemon up, RSS {results['daemon_rss_idle_mb']} MB", flush=True)

            t = throughput_phase(daemon, work, args)
            results["throughput"] = t
            lat = t["latency_ms"]
            print(f"throughput: {t['round_trips_per_s']:.0f} round trips/s over {t['connections']} connections "
                  f"x {t['inflight_per_connection']} in flight; p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms; "
                  f"daemon RSS {t['daemon_rss_mb']} MB; CPU daemon {t['daemon_cpu_s']} s, "
                  f"loadgen {t['loadgen_cpu_s']} s; errors {t['errors'] or 'none'}", flush=True)

            if not args.skip_scale:
                s = scale_phase(daemon, work, args)
                results["scale"] = s
                lat = s["latency_ms"]
                print(f"scale: {s['idle_connections_held']} idle connections held ({s['idle_connections_lost']} "
                      f"lost) for {s['duration_s']:.0f} s; one terminal echoing {s['echoes']} times: "
                      f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms; daemon RSS peak "
                      f"{s['daemon_rss_peak_mb']} MB (~{s['daemon_rss_per_idle_connection_kb']} KB per connection); "
                      f"errors {s['errors'] or 'none'}", flush=True)
            results["daemon_exit_code"] = daemon.stop()
            daemon = None
    finally:
        if daemon is not None:
            daemon.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

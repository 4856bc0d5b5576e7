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
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common
import asyncpg
from _common import ADMIN_DSN, ROOT, Daemon, Sampling

from tools import harness
from tools.loadgen import raise_nofile_limit

RESULTS = ROOT / "bench" / "results" / "wire.json"
MERCHANT = "MBENCH01"


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


class RssSampler(Sampling):
    """Peak daemon RSS while a phase runs (sampled twice a second)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.peak_mb = 0.0
        self._start_thread("rss-sampler", self._run)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak_mb = max(self.peak_mb, self.daemon.rss_mb())
            except OSError:
                return


def loadgen(port: int, json_out: Path, *args: str, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Run the load generator; return its summary and the CPU seconds it used."""
    summary, cpu_s = _common.loadgen(port, json_out, *args, timeout_s=timeout_s)
    return summary, round(cpu_s, 2)


def throughput_phase(d: Daemon, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = d.port
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
    port = d.port
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

    nofile = raise_nofile_limit(args.idle_connections + args.connections + 1024)
    if not args.skip_scale and nofile < args.idle_connections + 512:
        print(f"RLIMIT_NOFILE is {nofile}: too low for {args.idle_connections} connections", file=sys.stderr)
        return 2
    name = harness.unique_database_name("switchd_wire")
    dsn = harness.with_database(ADMIN_DSN, name)
    results: dict[str, Any] = {**_common.provenance(), "rlimit_nofile": nofile,
                               "daemon_log_level": args.log_level}
    asyncio.run(harness.create_database(ADMIN_DSN, name))
    try:
        # The daemon stops (leaving its `with`) before its work directory is removed.
        with (tempfile.TemporaryDirectory(prefix="switchd-wire-") as tmp,
              Daemon(Path(tmp), dsn, log_level=args.log_level, pool_size_min=2, pool_size_max=8,
                     connections_max=args.idle_connections + args.connections + 16) as daemon):
            work = Path(tmp)
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
    finally:
        asyncio.run(harness.drop_database(ADMIN_DSN, name))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

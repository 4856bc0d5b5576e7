"""Chaos suite (run on demand: `make chaos`, about 10 minutes; ARGS=--quick for a short run).

Faults against a live `switchd serve` on a private PostgreSQL (ledger/embedded.py: its own
directory and port), while terminals earn points the way the host interface specification
tells them to (specs/HOST-INTERFACE.md sections 8 and 11): one request at a time, a new STAN
each, an unanswered request resent unchanged on a new connection, reversed (0400 with field
90) when the terminal gives up; a 91/96 is final. Terminal 1 is the healthy terminal whose
latencies are compared before and during each fault.

Phases, in order (one daemon process through the first three, so its memory is comparable):

1. fuzz: random and mutated frames (bench/fuzz_memory.py's generator plus non-ASCII bytes and
   wrong field lengths): valid framing with garbage, truncated frames, huge length prefixes,
   random bitmaps (fields above 128 too), response MTIs;
2. connections: slow-loris connections (half a length header, then nothing), keep-alive slot
   hogs (an echo a second), a connect/close flood, from 127.0.0.x source addresses;
3. PostgreSQL restarts, fast and immediate in turn;
4. kill -9 of the daemon under load, then a restart.

Then, against the database: approvals lost (a 00 without its journal), postings doubled (one
key, two journals), 91/96 answers whose request had posted, given-up requests still posted
after their reversal, daemon crashes (exits the suite did not cause), unretrieved task
exceptions in the daemon's logs, the books (ledger.audit.check_books) and `switchd recon run`.
Prints a table, writes bench/results/chaos.json; exits 1 when any money figure, crash or
unretrieved exception is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common
import fuzz_memory
from _common import ROOT

from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.embedded import EmbeddedPostgres, find_pg_bin
from switch.terminals import add_terminal
from tools import _msg, harness

RESULTS = ROOT / "bench" / "results" / "chaos.json"
LOAD_MERCHANT = fuzz_memory.MERCHANT
RESPONSE_TIMEOUT_S = 4.0  # a terminal's wait for one answer before it resends
ATTEMPTS_MAX = 8  # sends of one request (the first and its retransmissions) before giving up
REVERSAL_ATTEMPTS_MAX = 30  # a reversal is resent until answered, within this bound
RECONNECT_PAUSE_S = 0.25
SOCKET_TIMEOUT_S = 5.0
BASELINE_S = 3.0  # healthy latencies gathered before each fault
RESTART_PAUSE_S = 1.0  # PostgreSQL down this long between stop and start
KILL_INTERVAL_S = 1.5  # load between a restart and the next kill
SETTLE_S = 2.0
HOLD_CONNECTIONS_S = 8.0
UNRETRIEVED = "Task exception was never retrieved"
SOURCE_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 250)]


@dataclass(frozen=True)
class Plan:
    """How much of each fault."""

    kills: int
    pg_restarts: int
    frames: int
    slow_connections: int
    hogs: int
    flood_connects: int
    terminals: int
    hold_connections_s: float = HOLD_CONNECTIONS_S
    baseline_s: float = BASELINE_S
    settle_s: float = SETTLE_S


FULL = Plan(kills=20, pg_restarts=10, frames=1_000_000, slow_connections=1000, hogs=100, flood_connects=5000,
            terminals=4)
QUICK = Plan(kills=3, pg_restarts=2, frames=20_000, slow_connections=200, hogs=20, flood_connects=500, terminals=3)


# ---------------------------------------------------------------------- terminals


@dataclass
class Outcome:
    """One earn request's fate as its terminal saw it."""

    terminal_id: str
    stan: str
    code: str | None = None  # the final answer's field 39; None: never answered
    attempts: int = 0
    reversal_code: str | None = None  # when the terminal gave up and reversed


@dataclass
class TerminalStats:
    outcomes: list[Outcome] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (decided at, seconds)


class LoadTerminal(threading.Thread):
    """A POS terminal that follows the specification: resend unanswered, reverse when giving up."""

    def __init__(self, tid: str, port: int, pans: list[str], stop: threading.Event, pause_s: float,
                 source: str | None = None) -> None:
        super().__init__(name=f"terminal-{tid}", daemon=True)
        self.tid, self.port, self.pans, self.stop_event, self.pause_s = tid, port, pans, stop, pause_s
        self.source = source  # a loopback address of its own (127.0.0.x): a host of its own to a balancer
        self.stats = TerminalStats()
        self.sock: socket.socket | None = None
        self.stan = 0
        self.rng = random.Random(tid)

    def _next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _exchange(self, message: bytes, stan: str) -> dict[str, str] | None:
        """Send on the current connection (opened and signed on if needed); the answer to
        ``stan`` or None (no answer in time, connection lost)."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT_S,
                                                     source_address=(self.source, 0) if self.source else None)
                self.sock.settimeout(RESPONSE_TIMEOUT_S)
                sign_on = _msg.build({"t": "0800", "7": _msg.transmission_datetime(), "11": self._next_stan(),
                                      "41": self.tid, "70": "001"}, "pos")
                self.sock.sendall(len(sign_on).to_bytes(2, "big") + sign_on)
                self._read()
            self.sock.sendall(len(message).to_bytes(2, "big") + message)
            deadline = time.monotonic() + RESPONSE_TIMEOUT_S
            while time.monotonic() < deadline:
                answer = self._read()
                if answer.get("11") == stan:
                    return answer
        except Exception:  # noqa: BLE001 - a reset, a timeout, an undecodable answer: all "no answer"
            pass
        # Unanswered: a new connection for the retransmission, so no late answer is mistaken.
        self._close()
        time.sleep(RECONNECT_PAUSE_S)
        return None

    def _read(self) -> dict[str, str]:
        assert self.sock is not None
        head = self._exact(2)
        return dict(_msg.decode_fields(self._exact(int.from_bytes(head, "big")), "pos"))

    def _exact(self, n: int) -> bytes:
        assert self.sock is not None
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def one_request(self) -> None:
        stan, now = self._next_stan(), _msg.transmission_datetime()
        original = {"t": "0200", "2": self.rng.choice(self.pans), "3": "000000",
                    "4": f"{self.rng.randint(100, 5000):012d}", "7": now, "11": stan,
                    "41": self.tid, "42": _msg.pad_mid(LOAD_MERCHANT), "49": "156"}
        request = _msg.build(original, "pos")
        outcome = Outcome(self.tid, stan)
        started = time.monotonic()
        while outcome.attempts < ATTEMPTS_MAX and outcome.code is None:
            outcome.attempts += 1
            answer = self._exchange(request, stan)  # unchanged: same 7 and 11
            if answer is not None:
                outcome.code = answer.get("39", "??")
        if outcome.code is not None:
            self.stats.latencies.append((time.monotonic(), time.monotonic() - started))
        else:
            self._reverse(outcome, original)
        self.stats.outcomes.append(outcome)

    def _reverse(self, outcome: Outcome, original: dict[str, str]) -> None:
        # As the specification asks: the original's card, processing code, amount and currency,
        # and field 90 naming it (without 2, 3 and 4 the reversal is a format error, 30).
        stan, now = self._next_stan(), _msg.transmission_datetime()
        reversal = _msg.build({**{k: original[k] for k in ("2", "3", "4", "41", "42", "49")},
                               "t": "0400", "7": now, "11": stan,
                               "90": "0200" + outcome.stan + original["7"] + "0" * 22}, "pos")
        for _ in range(REVERSAL_ATTEMPTS_MAX):
            answer = self._exchange(reversal, stan)
            if answer is not None:
                outcome.reversal_code = answer.get("39", "??")
                return

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.one_request()
            self.stop_event.wait(self.pause_s)
        self._close()


# ---------------------------------------------------------------------- set-up


def provision(dsn: str, master_key: bytes, terminal_ids: list[str]) -> list[str]:
    """fuzz_memory's program, merchant, fuzz terminals and cards, plus the load terminals; the PANs."""

    async def body() -> None:
        await fuzz_memory.provision(dsn, master_key)
        conn = await ledger_db.connect(dsn)
        try:
            for tid in terminal_ids:
                await add_terminal(conn, tid, LOAD_MERCHANT, None, None, master_key)
        finally:
            await conn.close()

    asyncio.run(body())
    return [fuzz_memory.demo_pan(n) for n in range(1, fuzz_memory.CARDS + 1)]


class ChaosFuzzer(fuzz_memory.Fuzzer):
    """fuzz_memory's mutants, plus non-ASCII bytes and wrong length digits inside the fields."""

    def frame(self) -> tuple[bytes, bool]:
        data, ends = super().frame()
        if ends or len(data) < 16 or self.rng.random() < 0.6:
            return data, ends
        body = bytearray(data[2:])
        at = self.rng.randrange(4 + fuzz_memory.BITMAP_BYTES, len(body))
        if self.rng.random() < 0.5:
            body[at] = self.rng.randrange(0x80, 0x100)  # non-ASCII in a (mostly numeric) field
        else:
            body[at] = ord(str(self.rng.randrange(10)))  # a length digit (or a digit) changed
        return len(body).to_bytes(2, "big") + bytes(body), False


# ---------------------------------------------------------------------- the run


class Chaos:
    """One run: the cluster, the daemon, the terminals, the faults, the figures."""

    def __init__(self, plan: Plan, workdir: Path, seed: int, log: Any = print) -> None:
        self.plan, self.workdir, self.seed, self.say = plan, workdir, seed, log
        self.master_key_hex = _common.MASTER_KEY_HEX
        self.cluster = EmbeddedPostgres(workdir / "state", port=harness.free_port())
        self.dsn = ""
        self.daemon: _common.Daemon | None = None
        self.logs: list[Path] = []
        self.crashes = 0
        self.kills_done = 0
        self.restarts_done = 0
        self.windows: dict[str, list[tuple[float, float, float]]] = {}  # phase: (baseline from, fault from, to)
        self.stop = threading.Event()
        self.terminals: list[LoadTerminal] = []
        self.rss_mb: dict[str, float] = {}
        self.phases: dict[str, Any] = {}

    # -------------------------------------------------------------- the daemon

    def _start_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.log_path = self.workdir / f"daemon-{len(self.logs) + 1}.log"
        self.logs.append(self.daemon.log_path)
        self.daemon.start()

    def check_alive(self) -> None:
        """A daemon that exited without being told to is a crash: counted, then restarted."""
        assert self.daemon is not None
        if not self.daemon.running:
            self.crashes += 1
            self.say(f"CRASH: the daemon exited {self.daemon.wait(0)}; restarting")
            self._start_daemon()

    # -------------------------------------------------------------- phases

    def _fault(self, name: str, body: Any) -> None:
        self.check_alive()
        baseline_from = time.monotonic()
        time.sleep(self.plan.baseline_s)
        fault_from = time.monotonic()
        self.phases[name] = body() or {}
        time.sleep(self.plan.settle_s)
        self.windows.setdefault(name, []).append((baseline_from, fault_from, time.monotonic()))
        self.check_alive()

    def phase_fuzz(self) -> dict[str, Any]:
        assert self.daemon is not None
        # No keys: frames naming the keyed terminals carry no MAC and are refused, as noise should be.
        fuzzer = ChaosFuzzer(random.Random(self.seed), {})
        sent = asyncio.run(fuzz_memory.fuzz_round(self.daemon.port, fuzzer, self.plan.frames, 8))
        self.say(f"fuzz: {sent['frames']} frames on {sent['connections']} connections, {sent['answers']} answers "
                 f"in {sent['elapsed_s']} s")
        return sent

    def phase_connections(self) -> dict[str, Any]:
        assert self.daemon is not None
        out = asyncio.run(connection_abuse(self.daemon.port, self.plan))
        self.say(f"connections: {out}")
        return out

    def phase_pg_restarts(self) -> dict[str, Any]:
        modes = []
        for n in range(self.plan.pg_restarts):
            mode = "fast" if n % 2 == 0 else "immediate"
            self.cluster.stop(mode)
            time.sleep(RESTART_PAUSE_S)
            self.cluster.start()
            modes.append(mode)
            self.restarts_done += 1
            time.sleep(KILL_INTERVAL_S * 2)
            self.check_alive()
        self.say(f"postgres: {len(modes)} restarts ({modes.count('fast')} fast, {modes.count('immediate')} immediate)")
        return {"restarts": len(modes), "modes": modes}

    def phase_kills(self) -> dict[str, Any]:
        assert self.daemon is not None
        for _ in range(self.plan.kills):
            time.sleep(KILL_INTERVAL_S)
            self.check_alive()
            self.daemon.signal(signal.SIGKILL)
            self.daemon.wait(30)
            self.kills_done += 1
            self._start_daemon()
        self.say(f"kill -9: {self.kills_done} kills and restarts")
        return {"kills": self.kills_done}

    # -------------------------------------------------------------- all of it

    def run(self) -> dict[str, Any]:
        os.chmod(self.workdir, 0o755)
        self.dsn = self.cluster.start()
        terminal_ids = [f"CH{n:06d}" for n in range(1, self.plan.terminals + 1)]
        self.daemon = _common.Daemon(self.workdir, self.dsn, log_level="warning",
                                     connections_max=self.plan.slow_connections + self.plan.hogs + 500,
                                     pool_size_min=2, pool_size_max=4, master_key_hex=self.master_key_hex,
                                     ledger={"timeout_post_s": "2.0"}, database={"timeout_connect_s": "1.0"})
        try:
            self.daemon.cli("db", "upgrade")
            pans = provision(self.dsn, bytes.fromhex(self.master_key_hex), terminal_ids)
            self._start_daemon()
            self.terminals = [LoadTerminal(tid, self.daemon.port, pans, self.stop, 0.02 if i else 0.05)
                              for i, tid in enumerate(terminal_ids)]
            for t in self.terminals:
                t.start()
            time.sleep(self.plan.baseline_s)
            self.rss_mb["before"] = round(self.daemon.rss_mb(), 1)
            self._fault("fuzz", self.phase_fuzz)
            self._fault("connections", self.phase_connections)
            self._fault("pg_restarts", self.phase_pg_restarts)
            self.rss_mb["after"] = round(self.daemon.rss_mb(), 1)
            self._fault("kills", self.phase_kills)
            self.stop.set()
            for t in self.terminals:
                t.join(RESPONSE_TIMEOUT_S * (ATTEMPTS_MAX + REVERSAL_ATTEMPTS_MAX) + 10)
            self.check_alive()
            recon = self.daemon.cli("recon", "run", check=False)
            figures = self.figures(asyncio.run(self.database_facts()))
            figures["recon"] = {"exit": recon.returncode, "output": (recon.stdout + recon.stderr).strip()[-500:]}
            figures["daemon_exit_code"] = self.daemon.stop()
            figures["unretrieved_task_exceptions"] = sum(
                p.read_text(errors="replace").count(UNRETRIEVED) for p in self.logs if p.exists())
            return figures
        finally:
            self.stop.set()
            if self.daemon is not None:
                self.daemon.stop()
            self.cluster.stop()

    async def database_facts(self) -> dict[str, Any]:
        conn = await ledger_db.connect(self.dsn)
        try:
            earns = await conn.fetch(
                "SELECT terminal_id, stan, journal_id, points_delta FROM loyalty.transactions "
                "WHERE txn_type = 'earn' AND journal_id IS NOT NULL AND terminal_id LIKE 'CH%'")
            undone = await conn.fetch(
                "SELECT original_journal_id, sum(points_delta) AS points FROM loyalty.transactions "
                "WHERE txn_type = 'reversal' AND journal_id IS NOT NULL AND original_journal_id IS NOT NULL "
                "GROUP BY 1")
            problems = await check_books(conn)
        finally:
            await conn.close()
        return {"earns": [dict(r) for r in earns], "undone": {r["original_journal_id"]: r["points"] for r in undone},
                "books": [str(p) for p in problems]}

    def figures(self, facts: dict[str, Any]) -> dict[str, Any]:
        posted: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in facts["earns"]:
            posted.setdefault((row["terminal_id"].strip(), row["stan"]), []).append(row)

        def net_points(key: tuple[str, str]) -> int:
            return sum(r["points_delta"] + int(facts["undone"].get(r["journal_id"], 0)) for r in posted.get(key, []))

        outcomes = [o for t in self.terminals for o in t.stats.outcomes]
        codes: dict[str, int] = {}
        for o in outcomes:
            codes[o.code or "unanswered"] = codes.get(o.code or "unanswered", 0) + 1
        approved = [o for o in outcomes if o.code == "00"]
        unavailable = [o for o in outcomes if o.code in ("91", "96")]
        given_up = [o for o in outcomes if o.code is None]
        money = {
            "approvals_lost": sum(1 for o in approved if not posted.get((o.terminal_id, o.stan))),
            "postings_doubled": sum(1 for rows in posted.values() if len(rows) > 1),
            "unavailable_that_posted": sum(1 for o in unavailable if posted.get((o.terminal_id, o.stan))),
            "given_up_still_posted": sum(1 for o in given_up if net_points((o.terminal_id, o.stan)) != 0),
            "other_declines_that_posted": sum(1 for o in outcomes if o.code not in (None, "00", "91", "96")
                                              and posted.get((o.terminal_id, o.stan))),
            "books_problems": len(facts["books"]),
        }
        healthy = self.terminals[0].stats.latencies
        p99: dict[str, dict[str, float | None]] = {}
        for name, windows in self.windows.items():
            before = [s for at, s in healthy for a, b, _ in windows if a <= at < b]
            during = [s for at, s in healthy for _, b, c in windows if b <= at < c]
            p99[name] = {"before_ms": percentile_ms(before, 0.99), "during_ms": percentile_ms(during, 0.99),
                         "during_answered": len(during)}
        return {
            "requests": len(outcomes), "approvals": len(approved), "answer_codes": codes,
            "given_up_and_reversed": sum(1 for o in given_up if o.reversal_code == "00"),
            "given_up_reversal_unanswered": sum(1 for o in given_up if o.reversal_code is None),
            **money, "books": facts["books"][:5],
            "crashes": self.crashes, "kills": self.kills_done, "pg_restarts": self.restarts_done,
            "healthy_p99": p99, "daemon_rss_mb": self.rss_mb, "phases": self.phases,
        }


def percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (seconds) in milliseconds; None when empty.

    >>> percentile_ms([0.001, 0.002, 0.010], 0.99)
    10.0
    >>> percentile_ms([], 0.99) is None
    True
    """
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(len(v) * q))] * 1000, 1)


async def connection_abuse(port: int, plan: Plan) -> dict[str, Any]:
    """Slow-loris connections and keep-alive hogs held open while a connect/close flood runs."""
    held: list[asyncio.StreamWriter] = []
    refused = 0
    rng = random.Random(port)

    async def open_from(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        nonlocal refused
        try:
            return await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, local_addr=(SOURCE_ADDRESSES[i % len(SOURCE_ADDRESSES)], 0)), 5)
        except (OSError, TimeoutError):
            refused += 1
            return None

    for i in range(plan.slow_connections):
        opened = await open_from(i)
        if opened is not None:
            opened[1].write(b"\x00")  # half a length header, then nothing
            held.append(opened[1])
    echo = _msg.build({"t": "0800", "7": _msg.transmission_datetime(), "11": "000001",
                       "41": fuzz_memory.PLAIN_TERMINALS[0], "70": "301"}, "pos")
    hogs: list[asyncio.StreamWriter] = []
    for i in range(plan.hogs):
        opened = await open_from(i + 7)
        if opened is not None:
            hogs.append(opened[1])
    flooded = 0

    async def flood() -> None:
        nonlocal flooded
        for _ in range(plan.flood_connects):
            opened = await open_from(rng.randrange(len(SOURCE_ADDRESSES)))
            if opened is not None:
                opened[1].close()
                flooded += 1

    async def keep_alive() -> None:
        deadline = time.monotonic() + plan.hold_connections_s
        while time.monotonic() < deadline:
            for w in hogs:
                if not w.is_closing():
                    w.write(len(echo).to_bytes(2, "big") + echo)
            await asyncio.sleep(1.0)

    await asyncio.gather(flood(), keep_alive())
    still_open = sum(1 for w in held if not w.is_closing())
    for w in held + hogs:
        w.close()
    return {"slow_loris": len(held), "hogs": len(hogs), "flood_connects": flooded, "refused_or_failed": refused,
            "slow_loris_still_open_at_end": still_open}


MONEY = ("approvals_lost", "postings_doubled", "unavailable_that_posted", "given_up_still_posted",
         "other_declines_that_posted", "books_problems")


def verdict(figures: dict[str, Any]) -> list[str]:
    """What is not zero among the figures that must be (empty: the run passed)."""
    bad = [k for k in (*MONEY, "crashes", "unretrieved_task_exceptions") if figures.get(k)]
    if figures.get("recon", {}).get("exit") not in (0, None):
        bad.append("recon")
    return bad


def table(figures: dict[str, Any]) -> str:
    lines = [f"{'figure':<34} value"]
    for key in ("requests", "approvals", "answer_codes", "given_up_and_reversed", "given_up_reversal_unanswered",
                *MONEY, "crashes", "unretrieved_task_exceptions", "kills", "pg_restarts", "daemon_rss_mb"):
        lines.append(f"{key:<34} {figures.get(key)}")
    lines.append(f"{'recon run exit':<34} {figures.get('recon', {}).get('exit')}")
    for name, p in figures.get("healthy_p99", {}).items():
        lines.append(f"{'healthy p99 ' + name:<34} before {p['before_ms']} ms, during {p['during_ms']} ms "
                     f"({p['during_answered']} answered)")
    return "\n".join(lines)


def run(plan: Plan, seed: int = 8583, log: Any = print, keep: bool = False) -> dict[str, Any]:
    """One chaos run at ``plan``'s counts, in a private directory (removed after unless ``keep``:
    then the stopped cluster and the daemon's logs stay there, for a post-mortem)."""
    workdir = Path(tempfile.mkdtemp(prefix="swchaos", dir="/tmp"))
    try:
        return Chaos(plan, workdir, seed, log).run()
    finally:
        if keep:
            log(f"kept {workdir}: the cluster's data under state/pg, the daemon's logs as daemon-N.log")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 kills, 2 restarts, 20,000 frames, 200 slow")
    parser.add_argument("--seed", type=int, default=8583)
    parser.add_argument("--keep", action="store_true", help="keep the cluster and the logs (a post-mortem)")
    args = parser.parse_args()
    if find_pg_bin() is None:
        print("no PostgreSQL server binaries (initdb, pg_ctl): cannot run", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    started, provenance = time.monotonic(), _common.provenance()
    figures = run(plan, args.seed, keep=args.keep)
    bad = verdict(figures)
    results = {**provenance, "plan": asdict(plan), "seed": args.seed,
               "elapsed_s": round(time.monotonic() - started, 1), **figures, "not_zero": bad}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(table(figures))
    print(f"elapsed {results['elapsed_s']} s; wrote {RESULTS.relative_to(ROOT)}; "
          + ("PASS" if not bad else f"FAIL: not zero: {', '.join(bad)}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

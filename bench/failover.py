"""Failover drill (on demand: `make drill-failover`, about 3-5 minutes, everything on this host).

A pg_auto_failover formation in a temporary directory with its own ports (a monitor, a primary
and a synchronous secondary: Debian's postgresql-15-auto-failover and pg-auto-failover-cli), two
`switchd serve` daemons on a DSN naming both nodes (target_session_attrs=read-write), HAProxy in
TCP mode in front of them (health checks against each daemon's /ready), and terminals that earn
points through HAProxy the way the host interface specification tells them to (resend an
unanswered request unchanged on a new connection, reverse it when giving up; bench/chaos.py's
LoadTerminal).

Events, under load: 1. kill -9 of the primary node (its keeper and its postmaster); the monitor
promotes the secondary; 2. the old primary's keeper started again: it rejoins as secondary
(pg_rewind); 3. a planned switchover back (`pg_autoctl perform switchover`).

Then, against the journals on the final primary: approvals lost (a 00 without its journal),
postings doubled (one terminal and STAN, two journals), 91/96 answers that had posted, the
books (ledger.audit.check_books) and `switchd recon run`. For each event: the longest time
without an approval around it, and the answers given meanwhile. Approvals acknowledged while the
new primary ran without a synchronous standby (wait_primary: on one server only) are counted.
Prints a table, writes bench/results/failover.json; exits 1 when money is not zero.

The monitor's health-check and demote timeouts are lowered here (reloadable settings): a short
demote timeout is for a drill only (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common
import chaos
from _common import ROOT

from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.embedded import RunAs, find_pg_bin
from tools import harness

RESULTS = ROOT / "bench" / "results" / "failover.json"
TERMINALS = 6
PAUSE_S = 0.02
STATE_POLL_S = 0.25
# The monitor's settings for a drill (milliseconds; the defaults detect a dead primary in ~50 s).
MONITOR_SETTINGS_MS = {
    "pgautofailover.health_check_period": 1000,
    "pgautofailover.health_check_timeout": 1000,
    "pgautofailover.health_check_max_retries": 1,
    "pgautofailover.health_check_retry_delay": 500,
    "pgautofailover.node_considered_unhealthy_timeout": 2000,
    "pgautofailover.primary_demote_timeout": 3000,
}
GOAL = {"approvals_lost": 0, "postings_doubled": 0, "failover_s": 10.0, "switchover_s": 5.0}
WAIT_STATE_S = 90.0
CHECKPOINT_NUDGE_S = 2.0
SOCKET_DIR = "/var/run/postgresql"  # pg_autoctl's clusters' sockets (Debian's default directory)


class TimedTerminal(chaos.LoadTerminal):
    """chaos.LoadTerminal that also keeps (time, code) of every answer it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[tuple[float, str]] = []

    def _exchange(self, message: bytes, stan: str) -> dict[str, str] | None:
        answer = super()._exchange(message, stan)
        if answer is not None and answer.get("t", "0210") == "0210":  # purchases only, not reversals
            self.answers.append((time.monotonic(), answer.get("39", "??")))
        return answer


class Formation:
    """monitor + node1 + node2 under pg_autoctl, as the postgres user, state in ``root``."""

    def __init__(self, root: Path, log: Any) -> None:
        self.root, self.say = root, log
        bindir = find_pg_bin()
        assert bindir is not None
        self.bindir = bindir
        self.user = RunAs.of("postgres") if os.geteuid() == 0 else None
        self.ports = {"monitor": harness.free_port(), "node1": harness.free_port(), "node2": harness.free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config"), "XDG_DATA_HOME": str(root / "data"),
                    "XDG_RUNTIME_DIR": str(root / "run"), "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
                    "PG_CONFIG": str(bindir / "pg_config"),
                    # Not root's home: libpq looks there for client certificates, which postgres may not read.
                    "HOME": str(root)}
        for var in ("PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
            self.env.pop(var, None)
        for d in ("config", "data", "run"):
            (root / d).mkdir(mode=0o700)
            self._own(root / d)

    def _own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.uid, self.user.gid)

    def _kw(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": list(self.user.groups)}

    def pgdata(self, name: str) -> str:
        return str(self.root / name)

    @property
    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.ports['monitor']}/pg_auto_failover?sslmode=require"

    @property
    def dsn(self) -> str:
        hosts = f"127.0.0.1:{self.ports['node1']},127.0.0.1:{self.ports['node2']}"
        return f"postgresql://postgres@{hosts}/switchd?target_session_attrs=read-write"

    def node_dsn(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[name]}/switchd"

    def ctl(self, *args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["pg_autoctl", *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout_s, check=False, **self._kw())
        if check and res.returncode != 0:
            raise RuntimeError(f"pg_autoctl {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                               f"{(res.stderr or res.stdout).strip()[-400:]}")
        return res

    def spawn(self, name: str, *args: str) -> None:
        """A pg_autoctl that runs in the foreground (its own session: killed as one group)."""
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen(["pg_autoctl", *args], env=self.env, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True, **self._kw())

    def monitor_sql(self, sql: str) -> str:
        res = subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.ports["monitor"]),
                              "-U", "autoctl_node", "-d", "pg_auto_failover", "-tAc", sql],
                             env={**self.env, "PGSSLMODE": "require"}, capture_output=True, text=True,
                             timeout=10, check=False, **self._kw())
        return res.stdout.strip()

    def states(self) -> dict[str, tuple[str, str]]:
        """{node name: (reported state, goal state)} from the monitor; empty when it cannot say."""
        out = self.monitor_sql("SELECT nodename || ' ' || reportedstate || ' ' || goalstate FROM pgautofailover.node")
        states: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                states[parts[0]] = (parts[1], parts[2])
        return states

    def wait_states(self, want: dict[str, str], timeout_s: float = WAIT_STATE_S, checkpoint: str | None = None) -> float:
        """Wait until each node reports its wanted state (reported == goal); the seconds waited.

        ``checkpoint``: a node to CHECKPOINT meanwhile: a new standby's pg_basebackup waits for
        the primary's next checkpoint, spread over minutes unless one is requested.
        """
        started = time.monotonic()
        nudged_at = started
        while time.monotonic() - started < timeout_s:
            if checkpoint is not None and time.monotonic() - nudged_at > CHECKPOINT_NUDGE_S:
                with contextlib.suppress(subprocess.SubprocessError):
                    self._psql_super(checkpoint, "CHECKPOINT")
                nudged_at = time.monotonic()
            now = self.states()
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"pg_autoctl of {dead} exited (see {self.root}/*.log)")
            if all(now.get(n, ("", ""))[0] == s and now[n][1] == s for n, s in want.items()):
                return time.monotonic() - started
            time.sleep(STATE_POLL_S)
        raise RuntimeError(f"formation not in {want} after {timeout_s}s: {self.states()}")

    def create(self) -> None:
        common = ["--hostname", "127.0.0.1", "--auth", "trust", "--ssl-self-signed"]
        self.spawn("monitor", "create", "monitor", "--pgdata", self.pgdata("monitor"),
                   "--pgport", str(self.ports["monitor"]), *common, "--run")
        deadline = time.monotonic() + WAIT_STATE_S
        while self.monitor_sql("SELECT 1") != "1":
            if time.monotonic() > deadline or self.procs["monitor"].poll() is not None:
                raise RuntimeError(f"monitor not up (see {self.root / 'monitor.log'})")
            time.sleep(0.5)
        # The monitor's superuser through its socket (hba: local trust) for the reloadable settings.
        for name, value in MONITOR_SETTINGS_MS.items():
            self._psql_super("monitor", f"ALTER SYSTEM SET {name} = {value}")
        self._psql_super("monitor", "SELECT pg_reload_conf()")
        for node in ("node1", "node2"):
            self.spawn(node, "create", "postgres", "--pgdata", self.pgdata(node), "--pgport", str(self.ports[node]),
                       "--name", node, "--dbname", "switchd", "--monitor", self.monitor_uri, *common, "--run")
            self.wait_states({"node1": "single"} if node == "node1" else {"node1": "primary", "node2": "secondary"},
                             checkpoint="node1" if node == "node2" else None)

    def _psql_super(self, name: str, sql: str) -> None:
        subprocess.run([str(self.bindir / "psql"), "-h", SOCKET_DIR, "-p", str(self.ports[name]),
                        "-U", "postgres" if self.user is not None else os.environ.get("USER", "postgres"),
                        "-d", "postgres", "-tAc", sql], env=self.env, capture_output=True, check=True,
                       timeout=10, **self._kw())

    def kill_node(self, name: str) -> None:
        """kill -9 of the node's keeper (its whole process group) and of its postmaster."""
        pid_file = self.root / name / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
        proc.wait(10)

    def restart_node(self, name: str) -> None:
        self.spawn(name, "run", "--pgdata", self.pgdata(name))

    def switchover(self) -> None:
        self.ctl("perform", "switchover", "--monitor", self.monitor_uri, "--wait", "60")

    def stop(self) -> None:
        """SIGTERM every keeper and the monitor (they stop their postgres), SIGKILL what lingers."""
        for name in ("node1", "node2", "monitor"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for name in ("monitor", "node1", "node2"):  # a postmaster left behind by a killed keeper
            pid_file = self.root / name / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def haproxy_config(port: int, daemons: list[tuple[int, int]]) -> str:
    """TCP mode; a daemon gets new connections while its /ready says 200 (systemd/haproxy-switchd.cfg)."""
    servers = "\n".join(f"    server d{i} 127.0.0.1:{pos} check port {mport} inter 500 fall 2 rise 1"
                        for i, (pos, mport) in enumerate(daemons, 1))
    # While no daemon is ready (no primary), terminals still reach one, which answers 91/96.
    servers += "\n" + "\n".join(f"    server any{i} 127.0.0.1:{pos} backup" for i, (pos, _m) in enumerate(daemons, 1))
    return f"""global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend pos
    bind 127.0.0.1:{port}
    default_backend switchd
backend switchd
    # A terminal's connections (its retransmissions) go to one daemon while it is up.
    balance source
    hash-type consistent
    option allbackups
    option httpchk GET /ready
    http-check expect status 200
{servers}
"""


class Drill:
    def __init__(self, root: Path, log: Any = print) -> None:
        self.root, self.say = root, log
        self.formation = Formation(root, log)
        self.key_hex = secrets.token_hex(32)
        self.daemons: list[_common.Daemon] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.terminals: list[TimedTerminal] = []
        self.stop_load = threading.Event()
        self.events: dict[str, dict[str, Any]] = {}
        self.state_log: list[tuple[float, dict[str, tuple[str, str]]]] = []
        self._watching = threading.Event()

    def _watch_states(self) -> None:
        while not self._watching.is_set():
            self.state_log.append((time.monotonic(), self.formation.states()))
            self._watching.wait(STATE_POLL_S)

    def run(self) -> dict[str, Any]:
        f = self.formation
        started = time.monotonic()
        f.create()
        self.say(f"formation up in {time.monotonic() - started:.1f} s: {f.states()}")
        for i in (1, 2):
            workdir = self.root / f"daemon{i}"
            workdir.mkdir()
            self.daemons.append(_common.Daemon(
                workdir, f.dsn, log_level="info", connections_max=200, pool_size_min=2, pool_size_max=6,
                master_key_hex=self.key_hex, metrics_port=harness.free_port(),
                ledger={"timeout_post_s": "3.0"}, database={"timeout_connect_s": "2.0"}))
        d1 = self.daemons[0]
        d1.cli("db", "upgrade")
        tids = [f"HA{n:06d}" for n in range(1, TERMINALS + 1)]
        pans = chaos.provision(f.dsn, bytes.fromhex(self.key_hex), tids)
        for d in self.daemons:
            d.start()
        lb_port = harness.free_port()
        (self.root / "haproxy.cfg").write_text(haproxy_config(lb_port, [(d.port, d.metrics_port or 0)
                                                                         for d in self.daemons]))
        self.haproxy = subprocess.Popen(["haproxy", "-f", str(self.root / "haproxy.cfg"), "-db"],
                                        stdout=subprocess.DEVNULL, stderr=open(self.root / "haproxy.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while not harness.answers(lb_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher = threading.Thread(target=self._watch_states, daemon=True)
        watcher.start()
        self.terminals = [TimedTerminal(tid, lb_port, pans, self.stop_load, PAUSE_S, source=f"127.0.0.{n}")
                          for n, tid in enumerate(tids, 2)]
        for t in self.terminals:
            t.start()
        time.sleep(8)
        # 1. the primary node dies
        at = time.monotonic()
        f.kill_node("node1")
        self.say("killed node1 (keeper and postmaster)")
        promoted_s = f.wait_states({"node2": "wait_primary"})
        self.events["failover"] = {"at": at, "promoted_s": round(promoted_s, 2)}
        self.say(f"node2 promoted after {promoted_s:.1f} s")
        time.sleep(10)
        # 2. the old primary comes back and rejoins as secondary
        at = time.monotonic()
        f.restart_node("node1")
        rejoined_s = f.wait_states({"node1": "secondary", "node2": "primary"})
        self.events["rejoin"] = {"at": at, "rejoined_s": round(rejoined_s, 2)}
        self.say(f"node1 rejoined as secondary after {rejoined_s:.1f} s")
        time.sleep(8)
        # 3. planned switchover back to node1
        at = time.monotonic()
        f.switchover()
        done_s = f.wait_states({"node1": "primary", "node2": "secondary"})
        self.events["switchover"] = {"at": at, "done_s": round(time.monotonic() - at, 2)}
        self.say(f"switchover done after {time.monotonic() - at:.1f} s (states settled {done_s:.1f} s later)")
        time.sleep(8)
        self.stop_load.set()
        for t in self.terminals:
            t.join(chaos.RESPONSE_TIMEOUT_S * (chaos.ATTEMPTS_MAX + chaos.REVERSAL_ATTEMPTS_MAX) + 10)
        self._watching.set()
        watcher.join(5)
        served = [round(sum(v for k, v in d.scrape().items() if k.startswith("switchd_requests_total")))
                  for d in self.daemons]
        recon = d1.cli("recon", "run", check=False)
        figures = self.figures(asyncio.run(self.database_facts()))
        figures["recon"] = {"exit": recon.returncode, "output": (recon.stdout + recon.stderr).strip()[-300:]}
        figures["requests_by_daemon"] = served  # since each daemon started; sign-ons included
        return figures

    async def database_facts(self) -> dict[str, Any]:
        conn = await ledger_db.connect(self.formation.dsn)
        try:
            primary = await conn.fetchval("SELECT inet_server_port()")
            earns = await conn.fetch(
                "SELECT terminal_id, stan, journal_id FROM loyalty.transactions "
                "WHERE txn_type = 'earn' AND journal_id IS NOT NULL AND terminal_id LIKE 'HA%'")
            problems = [str(p) for p in await check_books(conn)]
        finally:
            await conn.close()
        return {"primary_port": primary, "earns": [dict(r) for r in earns], "books": problems}

    def figures(self, facts: dict[str, Any]) -> dict[str, Any]:
        posted: dict[tuple[str, str], int] = {}
        for row in facts["earns"]:
            key = (row["terminal_id"].strip(), row["stan"])
            posted[key] = posted.get(key, 0) + 1
        outcomes = [o for t in self.terminals for o in t.stats.outcomes]
        codes: dict[str, int] = {}
        for o in outcomes:
            codes[o.code or "unanswered"] = codes.get(o.code or "unanswered", 0) + 1
        answers = sorted(a for t in self.terminals for a in t.answers)
        approvals_at = [at for at, code in answers if code == "00"]
        events: dict[str, Any] = {}
        starts = sorted(ev["at"] for ev in self.events.values())
        for name, ev in self.events.items():
            until = min([t for t in starts if t > ev["at"]] + [ev["at"] + 60])
            before = [t for t in approvals_at if t < ev["at"]]
            after = [t for t in approvals_at if ev["at"] <= t < until]
            # The longest stretch without an approval from the event on (the first one after it,
            # or a later hole while the formation settles), until the next event.
            marks = ([before[-1]] if before else []) + after
            gap_s = max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=None)
            hole = next(((a, b) for a, b in zip(marks, marks[1:], strict=False) if b - a == gap_s), None)
            during: dict[str, int] = {}
            if hole is not None:
                for at, code in answers:
                    if hole[0] < at < hole[1]:
                        during[code] = during.get(code, 0) + 1
            events[name] = {**{k: v for k, v in ev.items() if k != "at"},
                            "no_approval_s": None if gap_s is None else round(gap_s, 2),
                            "answers_during": during}
        # Approvals acknowledged while the primary had no synchronous standby (wait_primary).
        windows: list[list[float]] = []
        for at, states in self.state_log:
            if any(s[0] == "wait_primary" for s in states.values()):
                if windows and windows[-1][1] is not None and at - windows[-1][1] <= 2 * STATE_POLL_S + 1:
                    windows[-1][1] = at
                else:
                    windows.append([at, at])
        single_server = sum(1 for t in approvals_at if any(a <= t <= b + STATE_POLL_S for a, b in windows))
        approved = [o for o in outcomes if o.code == "00"]
        unavailable = [o for o in outcomes if o.code in ("91", "96")]
        return {
            "requests": len(outcomes), "approvals": len(approved), "answer_codes": codes,
            "approvals_lost": sum(1 for o in approved if not posted.get((o.terminal_id, o.stan))),
            "postings_doubled": sum(1 for n in posted.values() if n > 1),
            "unavailable_that_posted": sum(1 for o in unavailable if posted.get((o.terminal_id, o.stan))),
            "books_problems": facts["books"][:5],
            "events": events,
            "wait_primary_s": [round(b - a + STATE_POLL_S, 2) for a, b in windows],
            "approvals_on_one_server_only": single_server,
            "final_primary_port": facts["primary_port"],
        }

    def close(self) -> None:
        self.stop_load.set()
        for d in self.daemons:
            with contextlib.suppress(Exception):
                d.stop()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(5)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
        self.formation.stop()


def verdict(figures: dict[str, Any]) -> list[str]:
    """What misses the drill's goal (empty: met)."""
    misses = [f"{k}={figures[k]}" for k in ("approvals_lost", "postings_doubled", "unavailable_that_posted")
              if figures[k]]
    if figures["books_problems"]:
        misses.append("books out of balance")
    if figures["recon"]["exit"] != 0:
        misses.append("reconciliation failed")
    fo = figures["events"].get("failover", {}).get("no_approval_s")
    if fo is None or fo > GOAL["failover_s"]:
        misses.append(f"failover {fo} s > {GOAL['failover_s']} s")
    so = figures["events"].get("switchover", {}).get("no_approval_s")
    if so is None or so > GOAL["switchover_s"]:
        misses.append(f"switchover {so} s > {GOAL['switchover_s']} s")
    return misses


def table(figures: dict[str, Any]) -> str:
    lines = [f"requests {figures['requests']}, approvals {figures['approvals']}, answers {figures['answer_codes']}",
             f"approvals lost {figures['approvals_lost']}, postings doubled {figures['postings_doubled']}, "
             f"91/96 that posted {figures['unavailable_that_posted']}, books problems {len(figures['books_problems'])}, "
             f"recon exit {figures['recon']['exit']}"]
    for name, ev in figures["events"].items():
        lines.append(f"{name:<11} no approval for {ev['no_approval_s']} s; answers meanwhile {ev['answers_during']}; "
                     + ", ".join(f"{k} {v}" for k, v in ev.items() if k not in ("no_approval_s", "answers_during")))
    lines.append(f"requests answered by each daemon: {figures['requests_by_daemon']}")
    lines.append(f"wait_primary (one server) for {figures['wait_primary_s']} s (each time): "
                 f"{figures['approvals_on_one_server_only']} approvals on one server only")
    return "\n".join(lines)


def missing_tools() -> list[str]:
    return [tool for tool in ("pg_autoctl", "haproxy") if shutil.which(tool) is None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()
    missing = missing_tools()
    if missing or find_pg_bin() is None:
        print(f"failover drill: missing {', '.join(missing) or 'PostgreSQL server binaries'} "
              "(make drill-failover installs them)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="switchd-drill-"))
    root.chmod(0o755)
    drill = Drill(root)
    if drill.formation.user is not None:
        os.chown(root, drill.formation.user.uid, drill.formation.user.gid)
    started = time.monotonic()
    provenance = _common.provenance()  # at the start: its started_at is when the run began
    try:
        figures = drill.run()
    finally:
        drill.close()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    figures["goal"] = GOAL
    figures["misses"] = verdict(figures)
    figures["provenance"] = provenance
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(table(figures))
    print("goal met" if not figures["misses"] else f"goal missed: {'; '.join(figures['misses'])}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    money = figures["approvals_lost"] or figures["postings_doubled"] or figures["unavailable_that_posted"]
    return 1 if money or figures["books_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

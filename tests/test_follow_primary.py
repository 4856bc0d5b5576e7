"""The daemon follows the primary: a DSN naming two hosts, the primary killed (kill -9 of its
postmaster) under load, the synchronous standby promoted by the test.

While there is no primary the daemon answers at once (91 or 96: nothing was posted) and its
readiness endpoint says 503; once the standby is promoted it approves again on it, by itself,
and /ready says 200. Every approval sent before the kill is on the new primary (synchronous
replication), no posting is doubled, and the books balance.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fixtures_daemon import MASTER_KEY_HEX
from replica_support import ReplicaPair

from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.embedded import find_pg_bin
from ledger.standby_reads import StandbyReads
from tools import harness

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import _common  # noqa: E402 - bench/ is not a package
import chaos  # noqa: E402

pytestmark = [pytest.mark.skipif(find_pg_bin() is None or not (find_pg_bin() or Path()).joinpath(
    "pg_basebackup").exists(), reason="no PostgreSQL server binaries (pg_basebackup) on this machine"),
    pytest.mark.e2e]

PROMPT_S = 3.0  # an answer while there is no primary comes within this (no hang until a timeout)
FOLLOW_S = 15.0  # approvals again this long after the promotion at most


def ready_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


async def facts(dsn: str) -> tuple[dict[tuple[str, str], int], list[str]]:
    conn = await ledger_db.connect(dsn)
    try:
        rows = await conn.fetch("SELECT terminal_id, stan, count(*) AS n FROM loyalty.transactions "
                                "WHERE txn_type = 'earn' AND journal_id IS NOT NULL GROUP BY 1, 2")
        problems = [str(p) for p in await check_books(conn)]
    finally:
        await conn.close()
    return {(r["terminal_id"].strip(), r["stan"]): r["n"] for r in rows}, problems


def test_daemon_follows_the_primary() -> None:
    with tempfile.TemporaryDirectory(prefix="switchd-ha-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the clusters run as postgres when the tests run as root
        pair = ReplicaPair(root / "pg")
        (root / "pg").mkdir()
        key_hex = MASTER_KEY_HEX  # the suite's: this process seals the cards it provisions under it
        metrics_port = harness.free_port()
        try:
            pair.start()
            daemon = _common.Daemon(root, pair.dsn, log_level="info", connections_max=50, pool_size_min=1,
                                    pool_size_max=4, master_key_hex=key_hex, metrics_port=metrics_port,
                                    ledger={"timeout_post_s": "2.0"}, database={"timeout_connect_s": "1.0"})
            with daemon:
                daemon.cli("db", "upgrade")
                pans = chaos.provision(pair.dsn, bytes.fromhex(key_hex), ["HA000001", "HA000002"])
                daemon.start()
                assert wait_for(lambda: ready_status(metrics_port) == 200, 5)
                stop = threading.Event()
                load = chaos.LoadTerminal("HA000001", daemon.port, pans, stop, 0.02)
                load.start()
                time.sleep(1.5)
                pair.kill("primary")
                assert wait_for(lambda: ready_status(metrics_port) == 503, 5)
                # A request while no server accepts writes: answered, promptly, and not approved.
                probe = chaos.LoadTerminal("HA000002", daemon.port, pans, threading.Event(), 0)
                started = time.monotonic()
                probe.one_request()
                took_s = time.monotonic() - started
                assert probe.stats.outcomes[0].code in ("91", "96"), probe.stats.outcomes
                assert took_s < PROMPT_S, took_s
                pair.promote("standby")
                assert wait_for(lambda: ready_status(metrics_port) == 200, FOLLOW_S)
                approvals_before = sum(1 for o in load.stats.outcomes if o.code == "00")
                assert wait_for(lambda: sum(1 for o in load.stats.outcomes if o.code == "00") > approvals_before + 3,
                                FOLLOW_S), load.stats.outcomes[-5:]
                stop.set()
                load.join(60)
                posted, problems = asyncio.run(facts(pair.node_dsn("standby")))
            approved = [(o.terminal_id, o.stan) for o in load.stats.outcomes if o.code == "00"]
            assert approved and all(posted.get(k) for k in approved), "an approval was lost"
            assert all(n == 1 for n in posted.values()), "a posting was doubled"
            assert problems == []
        finally:
            pair.stop()


async def _standby_reads_follow_the_lag(pair: ReplicaPair) -> None:
    primary = await ledger_db.create_pool(pair.node_dsn("primary"), 1, 2)
    standby = await ledger_db.create_pool(pair.node_dsn("standby"), 1, 2)
    try:
        reads = StandbyReads(primary, standby, staleness_max_s=0.5, check_interval_s=0.05)
        await primary.execute("CREATE TABLE ha_probe (n int)")
        assert await reads.pool() is standby  # streaming and caught up
        await standby.execute("SELECT pg_wal_replay_pause()")
        await primary.execute("INSERT INTO ha_probe VALUES (1)")  # acknowledged: on the standby, not replayed
        await asyncio.sleep(1.0)
        assert await reads.pool() is primary  # behind by more than the bound: the primary answers
        await standby.execute("SELECT pg_wal_replay_resume()")
        await asyncio.sleep(0.3)
        assert await reads.pool() is standby
        assert await standby.fetchval("SELECT count(*) FROM ha_probe") == 1
    finally:
        await primary.close()
        await standby.close()


def test_reads_go_to_the_standby_only_within_the_staleness_bound() -> None:
    with tempfile.TemporaryDirectory(prefix="switchd-ha-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        (root / "pg").mkdir()
        pair = ReplicaPair(root / "pg")
        try:
            pair.start()
            asyncio.run(_standby_reads_follow_the_lag(pair))
        finally:
            pair.stop()

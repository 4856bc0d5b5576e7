"""Under load, through writer connections handed back and a PostgreSQL restart, no background
task of the daemon ends with an exception nobody retrieves (asyncio's "Task exception was
never retrieved": a failure that was neither handled nor told to anyone)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_daemon import CMAC_KEY_HEX, POS_LISTENER, Daemon

from ledger import db as ledger_db
from ledger import migrate
from ledger.embedded import EmbeddedPostgres, find_pg_bin

pytestmark = [pytest.mark.e2e,  # its own cluster and daemon
              pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL server binaries on this machine")]

ROOT = Path(__file__).resolve().parent.parent
MID = "MTEX1"
TERMINALS = [f"TEX{i:05d}" for i in range(1, 9)]
CARD_BODIES = [f"621234500{i:06d}" for i in range(1, 13)]  # Luhn digit added below
RATE_PER_S = 300
DURATION_S = 14.0
RESTARTS = 2
UNRETRIEVED = ("exception was never retrieved", "Task exception was never retrieved")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


@pytest.fixture
def cluster() -> Iterator[EmbeddedPostgres]:
    state = Path(tempfile.mkdtemp(prefix="swx", dir="/tmp"))
    os.chmod(state, 0o755)
    emb = EmbeddedPostgres(state, port=_free_port())
    try:
        yield emb
    finally:
        emb.stop()
        shutil.rmtree(state, ignore_errors=True)


def _migrated(cluster: EmbeddedPostgres) -> str:
    dsn = cluster.start()

    async def upgrade() -> None:
        conn = await ledger_db.connect(dsn)
        try:
            await migrate.upgrade(conn)
        finally:
            await conn.close()

    asyncio.run(upgrade())
    return dsn


def test_no_unretrieved_task_exception_under_load_and_a_restart(cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    dsn = _migrated(cluster)
    listener = {**POS_LISTENER, "timeout_handler_s": 3.0}
    # Writer connections go back to the pool every few batches: many hand-backs in the run.
    d = Daemon(tmp_path, dsn, [listener], extra={
        "ledger": {"batches_per_connection_max": 3, "timeout_post_s": 2.0},
        "database": {"timeout_connect_s": 1.0, "pool_size_max": 6},
    }).start()
    try:
        cards = [_luhn(body) for body in CARD_BODIES]
        d.provision("TEX", MID, TERMINALS, cards)
        terminals = tmp_path / "terminals.csv"
        terminals.write_text("".join(f"{t},{MID},cmac-aes,{CMAC_KEY_HEX}\n" for t in TERMINALS))
        pans = tmp_path / "pans.txt"
        pans.write_text("\n".join(cards) + "\n")
        out = tmp_path / "load.json"
        load = subprocess.Popen(
            [sys.executable, "-m", "tools.loadgen", "--port", str(d.ports["pos"]), "--connections",
             str(len(TERMINALS)), "--inflight", "32", "--rate", str(RATE_PER_S), "--duration-s", str(DURATION_S),
             "--mix", "purchase=6,inquiry=2,void=1,refund=1", "--terminals", str(terminals), "--pans", str(pans),
             "--timeout-s", "8", "--json-out", str(out), "--quiet"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(RESTARTS):
                time.sleep(DURATION_S / (RESTARTS + 1) - 1.5)
                cluster.stop()  # a restart under load: every connection is told, then closed
                time.sleep(1.5)
                cluster.start()
            _, err = load.communicate(timeout=DURATION_S + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        summary = json.loads(out.read_text())
        approved = summary["response_codes"].get("00", 0)
        # The load really ran, across the restart: a few hundred requests a second, most approved.
        assert summary["sent"] >= RATE_PER_S * DURATION_S * 0.5, (summary, err)
        assert approved >= summary["sent"] * 0.5, summary
        time.sleep(1.0)  # tasks that failed late are reported when collected
    finally:
        assert d.stop() == 0
    text = d.log_text()
    found = [line for line in text.splitlines() if any(u in line for u in UNRETRIEVED)]
    assert found == [], "\n".join(found[:5])
    assert "Traceback" not in text

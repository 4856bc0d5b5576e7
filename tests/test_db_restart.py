"""The database stops and starts again under a running daemon (a restart, a failover).

A private cluster (ledger.embedded) is stopped with terminals connected: every
request in the outage is answered 91/96 within the handler's bound (never
silence, the terminal's connection stays up), nothing is half-written, and
once the cluster is back the same daemon serves again without a restart:
retransmissions are decided exactly once, the terminal feed reconnects, the
books balance. And a daemon stopped while its database is away still drains
and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    check_mac,
    decode,
    purchase,
    until_decided,
    utc_stamp,
)

from ledger import db as ledger_db
from ledger import migrate
from ledger.audit import check_books
from ledger.embedded import EmbeddedPostgres, find_pg_bin
from switch.terminals import CACHE_TTL_S

MID, TID, CARD = "MRST1", "TRST0001", "6212345000000075"
MAC = ("cmac-aes", CMAC_KEY_HEX)
HANDLER_BOUND_S = 3.0

pytestmark = [pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL server binaries on this machine"),
              pytest.mark.e2e]  # a cluster and a daemon of its own, without the fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster() -> Iterator[EmbeddedPostgres]:
    state = Path(tempfile.mkdtemp(prefix="swr", dir="/tmp"))
    os.chmod(state, 0o755)
    emb = EmbeddedPostgres(state, port=_free_port())
    try:
        yield emb
    finally:
        emb.stop()
        shutil.rmtree(state, ignore_errors=True)


def _migrated(cluster: EmbeddedPostgres) -> str:
    """Start the cluster and bring its schema up to date; its DSN."""
    dsn = cluster.start()

    async def upgrade() -> None:
        conn = await ledger_db.connect(dsn)
        try:
            await migrate.upgrade(conn)
        finally:
            await conn.close()

    asyncio.run(upgrade())
    return dsn


def _send(t: Terminal, fields: dict[str, str]) -> tuple[dict[str, str], float]:
    started = time.monotonic()
    t.send(fields, mac=MAC)
    raw = t.recv_raw()
    resp = decode(raw, "pos")
    # Declines during the outage too: the terminal's last known key signs them (a terminal
    # discards an answer it cannot authenticate, and would not know to retransmit).
    assert check_mac(raw, "pos", *MAC), resp
    return resp, time.monotonic() - started


async def _kill_feed(dsn: str) -> None:
    conn = await ledger_db.connect(dsn)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'switchd-feed'")
        assert killed == 1, killed
    finally:
        await conn.close()


def test_database_restart_under_a_running_daemon(cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    dsn = _migrated(cluster)
    listener = {**POS_LISTENER, "timeout_handler_s": HANDLER_BOUND_S}
    d = Daemon(tmp_path, dsn, [listener], extra={"ledger": {"timeout_post_s": 2.0},
                                                 "database": {"timeout_connect_s": 1.0}}).start()
    try:
        d.provision("RST", MID, [TID], [CARD])
        d.wait_event("terminal_feed_up")
        stans = iter(range(1, 1_000_000))

        def earn() -> dict[str, str]:
            return purchase(TID, MID, pan=CARD, amount=1_000, stan=f"{next(stans):06d}")

        with Terminal(d.ports["pos"], "nac2", "pos", timeout_s=30.0) as t:
            assert t.call({"t": "0800", "7": utc_stamp(), "11": "900001", "41": TID, "70": "001"})["39"] == "00"
            before = [earn() for _ in range(5)]
            assert all(_send(t, req)[0]["39"] == "00" for req in before)

            # The change feed reconnects (its connection killed): every cached copy is dropped,
            # since what changed meanwhile is unknown; the last copies stay for outages.
            asyncio.run(_kill_feed(dsn))
            d.wait_event("terminal_feed_up", lambda e: len(d.events("terminal_feed_up")) >= 2, timeout_s=30)
            cluster.stop()
            during = [earn() for _ in range(5)]
            for req in during[:2]:  # at once: nothing cached, the last copy signs the decline
                resp, took_s = _send(t, req)
                assert resp["39"] in ("91", "96"), resp
                assert took_s < HANDLER_BOUND_S + 2, f"answered after {took_s:.1f}s"
            d.wait_event("terminal_feed_down")
            time.sleep(CACHE_TTL_S + 0.5)  # the cached copy has expired: a lookup fails now
            for req in during[2:]:
                resp, took_s = _send(t, req)
                assert resp["39"] in ("91", "96"), resp
                assert took_s < HANDLER_BOUND_S + 2, f"answered after {took_s:.1f}s"

            cluster.start()
            d.wait_event("terminal_feed_up", lambda e: len(d.events("terminal_feed_up")) >= 3, timeout_s=30)
            for req in during:  # the terminal retransmits what it could not get decided
                assert until_decided(lambda: _send(t, req)[0])["39"] == "00"  # noqa: B023
            after = [earn() for _ in range(5)]
            assert all(_send(t, req)[0]["39"] == "00" for req in after)

        async def facts() -> tuple[int, int, list[Any]]:
            conn = await ledger_db.connect(dsn)
            try:
                journals = int(await conn.fetchval(
                    "SELECT count(*) FROM loyalty.transactions WHERE txn_type = 'earn' AND journal_id IS NOT NULL"))
                points = int(await conn.fetchval(
                    "SELECT coalesce(sum(posted), 0) FROM ledger.accounts "
                    "WHERE owner_kind = 'card' AND purpose = 'points'"))
                return journals, points, await check_books(conn)
            finally:
                await conn.close()

        journals, points, problems = asyncio.run(facts())
        assert (journals, points, problems) == (15, 150, [])
        # The outage is in the log as JSON lines (libraries' complaints too), never a traceback.
        text = d.log_text()
        assert "Traceback" not in text
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert any(e.get("logger", "").startswith("asyncpg") for e in lines) or d.events("terminal_feed_down")
    finally:
        assert d.stop() == 0


def test_sigterm_with_the_database_away(cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    # The database is gone and an operator stops the daemon: it still drains and exits 0,
    # within its bounds, rather than hang on connections that cannot be closed politely.
    dsn = _migrated(cluster)
    d = Daemon(tmp_path, dsn, [POS_LISTENER], extra={"database": {"timeout_connect_s": 1.0}}).start()
    cluster.stop()
    d.wait_event("terminal_feed_down")
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 15
    assert d.events("stopped")

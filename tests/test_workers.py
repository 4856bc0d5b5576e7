"""`[daemon] workers = 2`: two processes share the listener's port and one database.

Over real TCP: many terminals' purchases are answered by both workers (each
worker's own /metrics counts its share), a duplicate sent to the other worker
is replayed byte for byte, the books balance, and SIGTERM stops the supervisor
and both workers with exit 0. A worker that dies takes the service down (exit
1), so that systemd restarts it whole.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator

import asyncpg
import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    check_mac,
    db_run,
    decode,
    next_stan,
    purchase,
    signed_on,
    until_decided,
    utc_stamp,
)

from ledger.audit import check_books

MID = "MWRK1"
CARD = "6212345000000000"
MAC = ("cmac-aes", CMAC_KEY_HEX)
TERMINALS = [f"TWRK{n:04d}" for n in range(1, 17)]


@pytest.fixture(scope="module")
def two(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("workers"), daemon_db, [POS_LISTENER], workers=2).start()
    try:
        d.provision("WRK", MID, TERMINALS, [CARD], issue_price_minor=1, redeem_value_minor=1)
        yield d
    finally:
        if d.running:
            assert d.stop() == 0


def _signed_on(d: Daemon, tid: str) -> Terminal:
    t = Terminal(d.ports["pos"], "nac2", "pos")
    assert t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": tid.ljust(8), "70": "001"})["39"] == "00"
    return t


def _requests_served(metrics_text: str) -> float:
    return sum(float(m) for m in re.findall(r'^switchd_requests_total\{[^}]*mti="0200"[^}]*\} (\S+)$',
                                             metrics_text, re.M))


def test_both_workers_serve_one_book(two: Daemon) -> None:
    workers = two.events("worker_ready")
    assert sorted(w["worker"] for w in workers) == [0, 1]
    assert len({w["pid"] for w in workers}) == 2
    ready = two.events("ready")[-1]
    assert ready["workers"] == 2
    terminals = [_signed_on(two, tid) for tid in TERMINALS]
    try:
        for _round in range(3):
            for tid, t in zip(TERMINALS, terminals, strict=True):
                t.send(purchase(tid, MID, pan=CARD, amount=1_000, pc="000000"), mac=MAC)
                raw = t.recv_raw()
                assert check_mac(raw, "pos", *MAC)
                assert decode(raw, "pos")["39"] == "00"
        # A retransmission reaching the other worker is the same answer, posted once.
        first = purchase(TERMINALS[0], MID, pan=CARD, amount=2_000, pc="000000")
        terminals[0].send(first, mac=MAC)
        original = terminals[0].recv_raw()
        with Terminal(two.ports["pos"], "nac2", "pos") as again:
            for _ in range(8):  # new connections land on either worker
                again.send(first, mac=MAC)
                assert again.recv_raw() == original
    finally:
        for t in terminals:
            t.close()
    served = [_requests_served(Daemon.scrape_port(w["metrics_port"])) for w in workers]
    assert all(n > 0 for n in served), f"both workers answer: {served}"
    assert sum(served) >= 3 * len(TERMINALS) + 1

    async def books(conn: asyncpg.Connection) -> tuple[list[object], int]:
        n = await conn.fetchval("SELECT count(*) FROM loyalty.transactions WHERE merchant_id = $1", MID)
        return await check_books(conn), int(n)

    problems, posted = db_run(two.dsn, books)
    assert problems == []
    assert posted == 3 * len(TERMINALS) + 1


def test_refunds_through_both_workers_never_exceed_the_original(two: Daemon) -> None:
    # Sixteen terminals refund one purchase at once over their own connections, which the
    # kernel spreads over both workers: only the database's lock on the original stands
    # between the two processes, and the refunds stop at the original's amount exactly.
    with signed_on(two.ports["pos"], TERMINALS[0]) as t:
        earned = t.call(purchase(TERMINALS[0], MID, pan=CARD, amount=10_000, pc="000000"), mac=MAC)
    assert earned["39"] == "00"
    before = [_requests_served(Daemon.scrape_port(w["metrics_port"])) for w in two.events("worker_ready")]
    codes: list[str] = []
    lock = threading.Lock()

    def refund(tid: str) -> None:
        with signed_on(two.ports["pos"], tid) as term:
            req = {**purchase(tid, MID, pan=CARD, amount=700, pc="200000"), "37": earned["37"]}
            code = term.call(req, mac=MAC)["39"]
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=refund, args=(tid,)) for tid in TERMINALS]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    after = [_requests_served(Daemon.scrape_port(w["metrics_port"])) for w in two.events("worker_ready")]
    assert all(b > a for a, b in zip(before, after, strict=True)), f"both workers refunded: {before} {after}"
    assert sorted(codes) == ["00"] * 14 + ["61"] * 2, codes

    async def undone(conn: asyncpg.Connection) -> tuple[list[object], int]:
        units = await conn.fetchval(
            "SELECT sum(c.undo_units) FROM loyalty.transactions o JOIN loyalty.transactions c "
            "ON c.original_journal_id = o.journal_id AND c.journal_id IS NOT NULL WHERE o.rrn = $1", earned["37"])
        return await check_books(conn), int(units)

    problems, units = db_run(two.dsn, undone)
    assert problems == [] and units == 9_800


def test_both_workers_ride_out_killed_connections(two: Daemon) -> None:
    # Every database connection of both workers (pools and terminal feeds) is killed: no
    # worker dies, each answers 96 at worst until it has reconnected, and each request,
    # retransmitted until decided, posts once.
    async def kill(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND application_name LIKE 'switchd%'"))

    async def posted(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM loyalty.transactions WHERE merchant_id = $1 "
                                       "AND journal_id IS NOT NULL", MID))

    before = db_run(two.dsn, posted)
    assert db_run(two.dsn, kill) >= 4  # two pools' connections and two feeds at least
    for tid in TERMINALS:
        with signed_on(two.ports["pos"], tid) as t:  # the sign-on writes to the database too
            req = purchase(tid, MID, pan=CARD, amount=1_000, pc="000000")
            assert until_decided(lambda: t.call(req, mac=MAC))["39"] == "00"  # noqa: B023
    assert two.running and not two.events("worker_exited")
    assert db_run(two.dsn, posted) == before + len(TERMINALS)
    two.wait_event("terminal_feed_up", lambda e: len(two.events("terminal_feed_up")) >= 4)


def test_a_disabled_terminal_is_refused_by_every_worker(two: Daemon) -> None:
    # Each worker follows the terminal feed: after the CLI disables a terminal, no worker
    # serves it, whichever one a new connection lands on (the cache would keep it 30 s).
    two.wait_event("terminal_feed_up", lambda e: len(two.events("terminal_feed_up")) >= 2)
    tid = TERMINALS[-1]
    two.cli("terminal", "disable", tid)
    try:
        codes = []
        for _ in range(12):  # new connections land on either worker
            with Terminal(two.ports["pos"], "nac2", "pos") as t:
                codes.append(t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": tid.ljust(8),
                                     "70": "001"})["39"])
        assert set(codes) == {"58"}, codes
    finally:
        two.cli("terminal", "enable", tid)


def test_a_dead_worker_stops_the_service(two: Daemon) -> None:
    victim = two.events("worker_ready")[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert two.wait() == 1
    exited = two.events("worker_exited")
    assert exited and exited[0]["pid"] == victim
    assert two.events("stopped")


def test_sigterm_drains_every_worker(daemon_db: str, start_daemon) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(daemon_db, [POS_LISTENER], workers=2)
    assert len(d.events("worker_ready")) == 2
    assert d.stop() == 0
    assert len(d.events("drained")) == 2
    assert d.events("stopped")[-1].get("workers") == 2

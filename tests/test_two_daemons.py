"""Two daemons (two processes with their own configs, as on two switch hosts behind a load
balancer) over one database: a terminal's retransmission that lands on the other daemon is
decided exactly once.

Duplicate detection, idempotency keys and RRNs live in the database, so: a request answered by
one daemon and resent to the other gets the same answer byte for byte; the same request sent to
both at once posts once and both answers agree; a reversal sent to the other daemon undoes the
purchase once. Both daemons say ready on /ready while they serve and reach the primary.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    db_run,
    decode,
    purchase,
    signed_on,
)

from ledger.audit import check_books

MID = "MTWO1"
CARD = "6212345000000018"
MAC = ("cmac-aes", CMAC_KEY_HEX)
TIDS = ["TTWO0001", "TTWO0002"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    daemons: list[Daemon] = []
    try:
        for name in ("a", "b"):
            workdir: Path = tmp_path_factory.mktemp(f"daemon-{name}")
            daemons.append(Daemon(workdir, daemon_db, [POS_LISTENER]).start())
        daemons[0].provision("TWO", MID, TIDS, [CARD], issue_price_minor=1, redeem_value_minor=1)
        yield daemons[0], daemons[1]
    finally:
        for d in daemons:
            if d.running:
                assert d.stop() == 0


def _journals(dsn: str, tid: str, stan: str) -> list[str]:
    async def body(conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch("SELECT txn_type FROM loyalty.transactions WHERE terminal_id = $1 AND stan = $2 "
                                "AND journal_id IS NOT NULL ORDER BY id", tid.ljust(8), stan)
        return [r["txn_type"] for r in rows]

    return list(db_run(dsn, body))


def _books(dsn: str) -> list[object]:
    return list(db_run(dsn, check_books))


def test_both_daemons_are_ready(pair: tuple[Daemon, Daemon]) -> None:
    for d in pair:
        assert d.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/ready", timeout=5) as resp:
            assert resp.status == 200
            assert b'"ready": true' in resp.read()


def test_a_retransmission_on_the_other_daemon_is_the_same_answer(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    request = purchase(TIDS[0], MID, pan=CARD, amount=1_500)
    with signed_on(a.ports["pos"], TIDS[0]) as on_a:
        on_a.send(request, mac=MAC)
        original = on_a.recv_raw()
    assert decode(original, "pos")["39"] == "00"
    # The terminal did not get it (say): it resends unchanged, on a new connection, which the
    # load balancer gives to the other daemon.
    with Terminal(b.ports["pos"], "nac2", "pos") as on_b:
        on_b.send(request, mac=MAC)
        assert on_b.recv_raw() == original
    assert _journals(a.dsn, TIDS[0], request["11"]) == ["earn"]
    assert _books(a.dsn) == []


def test_the_same_request_on_both_daemons_at_once_posts_once(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    request = purchase(TIDS[1], MID, pan=CARD, amount=2_500)
    conns = [signed_on(d.ports["pos"], TIDS[1]) for d in (a, b)]
    answers: list[dict[str, str]] = []
    start = threading.Barrier(2)

    def send(t: Terminal) -> None:
        start.wait()
        answers.append(t.call(request, mac=MAC))

    try:
        threads = [threading.Thread(target=send, args=(t,)) for t in conns]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    finally:
        for t in conns:
            t.close()
    codes = sorted(ans["39"] for ans in answers)
    # One daemon posts; the other replays its answer, or (a duplicate still in flight) says 91/96
    # and the retransmission gets the replay. Never two postings.
    assert "00" in codes and all(c in ("00", "91", "96") for c in codes), codes
    approved = [ans for ans in answers if ans["39"] == "00"]
    assert len({ans["37"] for ans in approved}) == 1, "two RRNs for one request"
    assert _journals(a.dsn, TIDS[1], request["11"]) == ["earn"]


def test_a_reversal_on_the_other_daemon_undoes_once(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
    request = purchase(TIDS[0], MID, pan=CARD, amount=700)
    with signed_on(a.ports["pos"], TIDS[0]) as on_a:
        assert on_a.call(request, mac=MAC)["39"] == "00"
    reversal = {**purchase(TIDS[0], MID, pan=CARD, amount=700), "t": "0400",
                "90": "0200" + request["11"] + request["7"] + "0" * 22}
    codes = []
    for d in (b, a, b):  # resent, to either daemon: reversed once
        with signed_on(d.ports["pos"], TIDS[0]) as t:
            codes.append(t.call(reversal, mac=MAC)["39"])
    assert codes == ["00", "00", "00"], codes
    assert _journals(a.dsn, TIDS[0], request["11"]) == ["earn"]
    assert _journals(a.dsn, TIDS[0], reversal["11"]) == ["reversal"]
    assert _books(a.dsn) == []

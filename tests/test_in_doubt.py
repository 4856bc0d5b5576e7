"""A retransmission of a request whose outcome is unknown is never answered 91/96 while the
database cannot be asked: it may have posted (a commit that reached a synchronous standby is
there once the standby is promoted), and a 91/96 says it did not (switch/in_doubt.py).

Through a proxy (tests/pg_proxy.py): the reply to a purchase's commit is lost and new
connections are refused, so the switch cannot learn the outcome and sends nothing. The terminal
resends the purchase while the database is still unreachable: nothing again (before, a 96 that
was false). Once the database is back, the resend is answered with the approval that committed,
and one journal exists.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Terminal,
    db_run,
    decode,
    purchase,
    signed_on,
)
from pg_proxy import PgProxy, through, upstream_of

CARD = "6212345000000125"
MAC = ("cmac-aes", CMAC_KEY_HEX)
TID = "TDBT0001"

pytestmark = pytest.mark.e2e


def _journals(dsn: str, stan: str) -> int:
    async def body(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(
            "SELECT count(*) FROM loyalty.transactions WHERE terminal_id = $1 AND stan = $2 "
            "AND journal_id IS NOT NULL", TID, stan))

    return int(db_run(dsn, body))


def _silent(t: Terminal) -> bool:
    try:
        t.recv_raw()
    except TimeoutError:
        return True
    return False


def test_a_copy_of_an_unanswered_request_gets_no_91_96(daemon_db: str, start_daemon: Any) -> None:
    with PgProxy(upstream_of(daemon_db)) as proxy:
        d = start_daemon(through(daemon_db, proxy.port), [POS_LISTENER],
                         extra={"ledger": {"timeout_post_s": 1.0}, "database": {"timeout_connect_s": 0.5}})
        d.provision("DBT", "MDBT1", [TID], [CARD])
        with signed_on(d.ports["pos"], TID) as t:
            t.send(purchase(TID, "MDBT1", pan=CARD, amount=1_000, stan="000001"), mac=MAC)
            assert decode(t.recv_raw(), "pos")["39"] == "00"  # warm: statements prepared
        # The cut needs the writer's connection open when the purchase is sent; when the writer
        # has to connect anew, the refused connection makes a true 96 (nothing sent): try again.
        for n in range(2, 8):
            request = purchase(TID, "MDBT1", pan=CARD, amount=1_000, stan=f"{n:06d}")
            with Terminal(d.ports["pos"], "nac2", "pos", timeout_s=4.0) as t:
                proxy.refuse_new = True
                proxy.arm("after")  # committed; its reply lost; no new connection to ask
                t.send(request, mac=MAC)
                silent = _silent(t)
            if silent:
                break
            assert _journals(daemon_db, request["11"]) == 0, "a 91/96 whose request had posted"
            proxy.refuse_new = False
            with signed_on(d.ports["pos"], TID) as t:  # the writer connects again
                t.send(purchase(TID, "MDBT1", pan=CARD, amount=1_000), mac=MAC)
                assert decode(t.recv_raw(), "pos")["39"] == "00"
        assert silent, "the commit's reply was never cut"
        with Terminal(d.ports["pos"], "nac2", "pos", timeout_s=4.0) as t:
            t.send(request, mac=MAC)  # resent while the database is still unreachable
            assert _silent(t), "a copy of a request in doubt was answered (91/96 would be false)"
        proxy.refuse_new = False
        with Terminal(d.ports["pos"], "nac2", "pos", timeout_s=10.0) as t:
            t.send(request, mac=MAC)
            assert decode(t.recv_raw(), "pos")["39"] == "00"
        assert _journals(daemon_db, request["11"]) == 1

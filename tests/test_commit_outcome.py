"""A 91 or 96 means nothing was posted: the engine finds out what a batch did when its connection
breaks during the commit, before it answers anyone.

A proxy between the engine and PostgreSQL (tests/pg_proxy.py) breaks the connection exactly
before the posting statement reaches the server, or exactly after the server committed it (its
answer dropped), or after the COMMIT of a transaction that stores receipts. Each time the
engine's answer must be the truth: EXISTS with the journal when it committed, ERROR without a
reason (nothing posted) when it did not, and ERROR with reason "unknown" only when the database
cannot be reached to find out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from fixtures_daemon import CMAC_KEY_HEX, POS_LISTENER, db_run, decode, purchase, signed_on
from ledger_support import ledger_settings
from pg_proxy import PgProxy, through, upstream_of

from ledger import accounts as A
from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.commands import Leg, Result, Status, transfer
from ledger.engine import UNKNOWN, Ledger, Receipt

CARD = "6212345000000109"
MAC = ("cmac-aes", CMAC_KEY_HEX)


@pytest.fixture(name="proxied")
async def proxied_fixture(db_dsn: str) -> AsyncIterator[tuple[PgProxy, asyncpg.Pool, asyncpg.Pool]]:
    """The proxy, a pool through it (the engine's) and a direct one (the test's eyes)."""
    with PgProxy(upstream_of(db_dsn)) as proxy:
        engine_pool = await ledger_db.create_pool(through(db_dsn, proxy.port), 1, 4)
        direct = await ledger_db.create_pool(db_dsn, 1, 2)
        try:
            yield proxy, engine_pool, direct
        finally:
            await engine_pool.close()
            await direct.close()


async def _accounts(pool: asyncpg.Pool) -> tuple[int, int]:
    await A.ensure_asset(pool, "PTS:T", "points", 0)
    return (await A.open_account(pool, "operator", "op", "PTS:T", "debit", "none"),
            await A.open_account(pool, "member", "m1", "PTS:T", "credit", "non_negative"))


async def _journals(pool: asyncpg.Pool, key: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM ledger.journals WHERE idempotency_key = $1", key))


async def test_committed_before_the_connection_broke_is_exists(
        proxied: tuple[PgProxy, asyncpg.Pool, asyncpg.Pool]) -> None:
    proxy, pool, direct = proxied
    op, member = await _accounts(direct)
    async with Ledger(pool, ledger_settings(timeout_post_s=3.0)) as led:
        assert (await led.post(transfer("warm", [Leg(op, member, 1)]))).status is Status.POSTED
        proxy.arm("after")
        res = await led.post(transfer("k-after", [Leg(op, member, 5)]))
        assert proxy.cuts == 1
        assert res.status is Status.EXISTS and res.journal_id is not None, res
        assert res.balances == {op: -6, member: 6}
        # The same key again: the same journal, nothing more.
        again = await led.post(transfer("k-after", [Leg(op, member, 5)]))
        assert again.status is Status.EXISTS and again.journal_id == res.journal_id
    assert await _journals(direct, "k-after") == 1
    assert await check_books(direct) == []


async def test_not_sent_to_the_server_is_nothing_posted(proxied: tuple[PgProxy, asyncpg.Pool, asyncpg.Pool]) -> None:
    proxy, pool, direct = proxied
    op, member = await _accounts(direct)
    async with Ledger(pool, ledger_settings(timeout_post_s=3.0)) as led:
        proxy.arm("before")
        res = await led.post(transfer("k-before", [Leg(op, member, 5)]))
        assert proxy.cuts == 1
        assert res.status is Status.ERROR and res.reason is None and "nothing was posted" in (res.detail or "")
        assert await _journals(direct, "k-before") == 0
        # A retransmission posts it, once.
        assert (await led.post(transfer("k-before", [Leg(op, member, 5)]))).status is Status.POSTED
    assert await _journals(direct, "k-before") == 1


async def test_a_commit_with_receipts_is_found_too(proxied: tuple[PgProxy, asyncpg.Pool, asyncpg.Pool]) -> None:
    proxy, pool, direct = proxied
    op, member = await _accounts(direct)

    def receipt(res: Result) -> Receipt:
        return Receipt("r-commit", b"h", f"{res.status}".encode())

    async with Ledger(pool, ledger_settings(timeout_post_s=3.0)) as led:
        proxy.arm("after_commit")
        res = await led.post(transfer("k-commit", [Leg(op, member, 7)]), receipt=receipt)
        assert proxy.cuts == 1
        assert res.status is Status.EXISTS, res
    assert await _journals(direct, "k-commit") == 1
    assert bytes(await direct.fetchval("SELECT payload FROM ledger.receipts WHERE idempotency_key = 'r-commit'")) \
        == b"posted"


async def test_a_statement_cut_inside_its_transaction_did_not_commit(
        proxied: tuple[PgProxy, asyncpg.Pool, asyncpg.Pool]) -> None:
    proxy, pool, direct = proxied
    op, member = await _accounts(direct)
    async with Ledger(pool, ledger_settings(timeout_post_s=3.0)) as led:
        proxy.arm("after")  # the statement ran, inside BEGIN ... COMMIT; the COMMIT never went
        res = await led.post(transfer("k-txn", [Leg(op, member, 7)]),
                             receipt=lambda r: Receipt("r-txn", b"h", b"x"))
        assert proxy.cuts == 1
        assert res.status is Status.ERROR and res.reason is None, res
    assert await _journals(direct, "k-txn") == 0
    assert await direct.fetchval("SELECT count(*) FROM ledger.receipts WHERE idempotency_key = 'r-txn'") == 0


async def test_unknown_only_when_the_database_cannot_be_asked(
        proxied: tuple[PgProxy, asyncpg.Pool, asyncpg.Pool]) -> None:
    proxy, pool, direct = proxied
    op, member = await _accounts(direct)
    async with Ledger(pool, ledger_settings(timeout_post_s=1.0)) as led:
        assert (await led.post(transfer("warm", [Leg(op, member, 1)]))).status is Status.POSTED
        proxy.refuse_new = True
        proxy.arm("after")
        res = await led.post(transfer("k-unknown", [Leg(op, member, 5)]))
        assert res.status is Status.ERROR and res.reason == UNKNOWN, res
        proxy.refuse_new = False
        # It had committed: asking again with the same key says so.
        again = await led.post(transfer("k-unknown", [Leg(op, member, 5)]))
        assert again.status is Status.EXISTS
    assert await _journals(direct, "k-unknown") == 1


def test_the_switch_answers_the_truth_when_the_commit_reply_is_lost(daemon_db: str, start_daemon: Any) -> None:
    """End to end: a purchase whose commit's reply is lost is approved (00, its real RRN, one
    journal); one that never reached the server is answered 96 and posted nothing, and its
    retransmission is approved once."""
    with PgProxy(upstream_of(daemon_db)) as proxy:
        d = start_daemon(through(daemon_db, proxy.port), [POS_LISTENER], extra={"ledger": {"timeout_post_s": 3.0}})
        d.provision("CUT", "MCUT1", ["TCUT0001"], [CARD])
        with signed_on(d.ports["pos"], "TCUT0001") as t:
            t.send(purchase("TCUT0001", "MCUT1", pan=CARD, amount=1_000, stan="000001"), mac=MAC)
            assert decode(t.recv_raw(), "pos")["39"] == "00"  # warm: statements prepared

            proxy.arm("after")
            committed = purchase("TCUT0001", "MCUT1", pan=CARD, amount=1_000, stan="000002")
            t.send(committed, mac=MAC)
            answer = decode(t.recv_raw(), "pos")
            assert proxy.cuts == 1
            assert answer["39"] == "00" and len(answer["37"]) == 12 and answer.get("38"), answer["39"]
            t.send(committed, mac=MAC)  # a retransmission: the same answer
            again = decode(t.recv_raw(), "pos")
            assert (again["39"], again["37"], again["38"]) == (answer["39"], answer["37"], answer["38"])

            proxy.arm("before")
            lost = purchase("TCUT0001", "MCUT1", pan=CARD, amount=1_000, stan="000003")
            t.send(lost, mac=MAC)
            first = decode(t.recv_raw(), "pos")
            assert proxy.cuts == 2
            assert first["39"] in ("91", "96")
            assert _rows(d.dsn, "000003") == 0, "a 96 whose request had posted"
            t.send(lost, mac=MAC)
            assert decode(t.recv_raw(), "pos")["39"] == "00"
        assert _rows(d.dsn, "000002") == 1 and _rows(d.dsn, "000003") == 1


def _rows(dsn: str, stan: str) -> int:
    async def body(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(
            "SELECT count(*) FROM loyalty.transactions WHERE terminal_id = 'TCUT0001' AND stan = $1 "
            "AND journal_id IS NOT NULL", stan))

    return int(db_run(dsn, body))

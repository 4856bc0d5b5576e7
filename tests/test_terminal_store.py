"""TerminalStore while the database cannot be read: which copies answer, and for what."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from ledger import db as ledger_db
from ledger.loyalty import demo
from switch.terminals import TerminalStore, add_terminal

KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"


async def _store_with_terminal(pool: asyncpg.Pool, db_dsn: str) -> tuple[TerminalStore, asyncpg.Pool]:
    master = secrets.token_bytes(32)
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
    await add_terminal(pool, "TSTORE01", "M0001", "cmac-aes", KEY_HEX, master)
    # A pool of the store's own, closed below to stand for a database that cannot be read.
    own = await ledger_db.create_pool(db_dsn, 1, 2)
    store = TerminalStore(own, master)
    term = await store.get("TSTORE01")
    assert term is not None and term.mac_key == bytes.fromhex(KEY_HEX)
    return store, own


async def test_an_outage_answers_from_the_last_copy(pool: asyncpg.Pool, db_dsn: str) -> None:
    store, own = await _store_with_terminal(pool, db_dsn)
    store.forget()  # the feed reconnected: every cached copy dropped, the last copies kept
    await own.close()
    term = await store.get("TSTORE01")
    assert term is not None and term.mac_key == bytes.fromhex(KEY_HEX)
    with pytest.raises(asyncpg.InterfaceError):
        await store.get("TSTORE01", fresh=True)  # a re-check never settles for a copy


async def test_a_terminal_whose_change_was_announced_only_signs_its_96(pool: asyncpg.Pool, db_dsn: str) -> None:
    # Its sign-on (or any change) was announced, then the database went: its last copy no
    # longer decides anything, but still gives the key that MACs the failed request's 96.
    store, own = await _store_with_terminal(pool, db_dsn)
    store.forget("TSTORE01")
    await own.close()
    with pytest.raises(asyncpg.InterfaceError):
        await store.get("TSTORE01")
    last = store.last_known("TSTORE01")
    assert last is not None and last.mac_key == bytes.fromhex(KEY_HEX)
    assert store.last_known("TNEVER01") is None

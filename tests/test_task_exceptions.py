"""A connection the server has just told it is going away (PostgreSQL's shutdown sends every
backend, idle ones too, an ErrorResponse 57P01 before closing the socket): asyncpg puts it in
its error-consuming state, and until the close arrives it still looks open; the next statement
on it raises InternalClientError ("cannot switch to state 12; another operation (2) is in
progress"). Its callers are told, the connection is not used again, and no task ends with an
exception nobody retrieves."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from ledger_support import ledger_settings

from ledger import accounts as A
from ledger import db as ledger_db
from ledger.coalesce import Coalescer
from ledger.commands import Leg, Status, transfer
from ledger.engine import Ledger


def _fatal_57p01() -> bytes:
    """The ErrorResponse a backend sends on a fast shutdown (before it closes the socket)."""
    fields = b"".join(code + text.encode() + b"\0" for code, text in (
        (b"S", "FATAL"), (b"V", "FATAL"), (b"C", "57P01"),
        (b"M", "terminating connection due to administrator command")))
    body = fields + b"\0"
    return b"E" + (len(body) + 4).to_bytes(4, "big") + body


def _told_going_away(conn: Any) -> None:
    conn._protocol.data_received(_fatal_57p01())


@pytest.fixture
async def unretrieved() -> AsyncIterator[list[dict[str, Any]]]:
    """What the loop's exception handler is told while the test runs."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


@pytest.fixture
async def pool1(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await ledger_db.create_pool(db_dsn, 1, 1)
    try:
        yield p
    finally:
        p.terminate()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)


def _never_retrieved(seen: list[dict[str, Any]]) -> list[str]:
    return [str(c.get("message")) for c in seen if "never retrieved" in str(c.get("message"))]


async def test_coalescer_tells_its_callers_and_leaves_no_unretrieved_exception(
        pool1: asyncpg.Pool, unretrieved: list[dict[str, Any]]) -> None:
    async with pool1.acquire() as conn:
        _told_going_away(conn)  # idle, back to the pool: the state asyncpg is left in
    echo = Coalescer(pool1, "SELECT q.n, q.v FROM unnest($1::int[]) WITH ORDINALITY AS q(v, n)")
    results = await asyncio.gather(echo.fetch(1), echo.fetch(2), return_exceptions=True)
    assert all(isinstance(r, asyncpg.InternalClientError) for r in results), results
    assert "another operation" in str(results[0]) or "cannot" in str(results[0])
    await _settle()
    assert _never_retrieved(unretrieved) == []
    # The pool replaced the connection: the next call is answered.
    row = await echo.fetch(7)
    assert row is not None and row["v"] == 7


async def test_coalescer_split_run_tells_each_caller(pool1: asyncpg.Pool,
                                                     unretrieved: list[dict[str, Any]]) -> None:
    # An error that is not the database's (a row without its column n) is each caller's answer too.
    bad = Coalescer(pool1, "SELECT 1 AS x FROM unnest($1::int[])", split_on_error=True)
    results = await asyncio.gather(bad.fetch(1), bad.fetch(2), return_exceptions=True)
    assert all(isinstance(r, KeyError) for r in results), results
    await _settle()
    assert _never_retrieved(unretrieved) == []


async def test_writer_does_not_post_again_on_a_connection_told_it_is_going_away(
        pool1: asyncpg.Pool, unretrieved: list[dict[str, Any]]) -> None:
    await A.ensure_asset(pool1, "PTS:X", "points", 0)
    op = await A.open_account(pool1, "operator", "op", "PTS:X", "debit", "none")
    m1 = await A.open_account(pool1, "member", "m1", "PTS:X", "credit", "non_negative")
    settings = ledger_settings(batch_linger_ms=0, batches_inflight_max=1, timeout_post_s=3.0)
    async with Ledger(pool1, settings) as led:
        assert (await led.post(transfer("gone-1", [Leg(op, m1, 1)]))).status is Status.POSTED
        assert len(led._idle_conns) == 1
        _told_going_away(led._idle_conns[0][0])
        failed = await led.post(transfer("gone-2", [Leg(op, m1, 1)]))
        assert failed.status is Status.ERROR, failed
        # Not kept for the next batch: that one gets a fresh connection and posts.
        assert (await led.post(transfer("gone-3", [Leg(op, m1, 1)]))).status is Status.POSTED
        assert (await led.post(transfer("gone-2", [Leg(op, m1, 1)]))).status is Status.POSTED
    await _settle()
    assert _never_retrieved(unretrieved) == []

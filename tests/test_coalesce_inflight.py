"""Coalesced statements (ledger/coalesce.py) and the writer's batches in flight, on a real PostgreSQL.

- many concurrent lookups go out as few statements, each caller gets its own row;
- a failing write statement is re-run call by call: only the bad call fails;
- a read that fails fails its callers with the database's error, nobody waits for ever;
- a caller that gives up does not disturb the others;
- with two batches in flight, one key posted concurrently many times is posted
  once (the rest answered "exists"), hot accounts stay exact, the books balance.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from ledger_support import ledger_settings

from ledger import accounts as A
from ledger.audit import check_books
from ledger.coalesce import Coalescer
from ledger.commands import Leg, Status, transfer
from ledger.engine import Ledger
from ledger.errors import Unavailable

LOOKUP = ("SELECT q.n, q.v * 2 AS doubled FROM unnest($1::int[]) WITH ORDINALITY AS q(v, n) "
          "WHERE q.v <> 13")  # 13 has no row: its caller gets None


async def test_concurrent_lookups_share_statements(pool: asyncpg.Pool) -> None:
    reads = Coalescer(pool, LOOKUP, concurrency_max=2)
    values = list(range(200))
    rows = await asyncio.gather(*(reads.fetch(v) for v in values))
    assert [None if r is None else r["doubled"] for r in rows] == [None if v == 13 else 2 * v for v in values]
    assert reads.calls_total == 200
    assert reads.batches_total <= 20, f"{reads.batches_total} statements for 200 calls"


async def test_one_slot_means_one_statement_at_a_time(pool: asyncpg.Pool) -> None:
    # [database] coalesced_inflight_max = 1 (several workers share one PostgreSQL): calls that
    # arrive while the statement runs wait for it, and go together in the next one.
    slow = ("SELECT q.n, q.v * 2 AS doubled, pg_sleep(0.05) IS NULL AS slept "
            "FROM unnest($1::int[]) WITH ORDINALITY AS q(v, n)")
    reads = Coalescer(pool, slow, concurrency_max=1)
    running_max = 0

    async def call(v: int) -> int:
        nonlocal running_max
        row = reads.fetch(v)
        running_max = max(running_max, reads._running)
        got = await row
        running_max = max(running_max, reads._running)
        assert got is not None
        return int(got["doubled"])

    async def wave(base: int) -> list[int]:
        return list(await asyncio.gather(*(call(base + v) for v in range(10))))

    first = asyncio.ensure_future(wave(0))
    await asyncio.sleep(0.01)  # the first statement is running: these ten must wait for it
    second = await wave(100)
    assert await first == [2 * v for v in range(10)] and second == [2 * (100 + v) for v in range(10)]
    assert running_max == 1
    assert reads.batches_total == 2 and reads.calls_total == 20


async def test_linger_from_idle_gathers_calls_spread_in_time(pool: asyncpg.Pool) -> None:
    # Calls 20 ms apart: without a linger each finds the coalescer idle and goes alone; with a
    # 150 ms linger the first waits, and the rest join its statement.
    async def spread(reads: Coalescer) -> list[int]:
        async def call(v: int) -> int:
            await asyncio.sleep(0.02 * v)
            row = await reads.fetch(v)
            assert row is not None
            return int(row["doubled"])
        return list(await asyncio.gather(*(call(v) for v in range(1, 6))))

    alone = Coalescer(pool, LOOKUP, concurrency_max=1)
    assert await spread(alone) == [2, 4, 6, 8, 10] and alone.batches_total >= 4
    lingering = Coalescer(pool, LOOKUP, concurrency_max=1, linger_s=0.15)
    assert await spread(lingering) == [2, 4, 6, 8, 10] and lingering.batches_total == 1


async def test_loyalty_takes_the_configured_slots(pool: asyncpg.Pool) -> None:
    from ledger.loyalty.operations import Loyalty

    async with Ledger(pool, ledger_settings()) as led:
        default = Loyalty(led, pool)
        one = Loyalty(led, pool, coalesced_inflight_max=1, coalesced_linger_s=0.002)
    assert {(c.concurrency_max, c.linger_s) for c in default.coalescers().values()} == {(2, 0.0)}
    assert {(c.concurrency_max, c.linger_s) for c in one.coalescers().values()} == {(1, 0.002)}


async def test_a_bad_write_fails_alone(pool: asyncpg.Pool) -> None:
    await pool.execute("CREATE TABLE coalesce_t (v int PRIMARY KEY CHECK (v >= 0))")
    writes = Coalescer(pool, "WITH rows AS (SELECT * FROM unnest($1::int[]) WITH ORDINALITY AS q(v, n)), "
                             "ins AS (INSERT INTO coalesce_t SELECT v FROM rows) SELECT n FROM rows",
                       split_on_error=True)
    results = await asyncio.gather(*(writes.fetch(v) for v in (1, 2, -3, 4)), return_exceptions=True)
    assert [isinstance(r, asyncpg.CheckViolationError) for r in results] == [False, False, True, False]
    assert sorted(r["v"] for r in await pool.fetch("SELECT v FROM coalesce_t")) == [1, 2, 4]


async def test_a_failing_read_fails_its_callers(pool: asyncpg.Pool) -> None:
    reads = Coalescer(pool, "SELECT q.n, 1 / (q.v - q.v) AS boom FROM unnest($1::int[]) WITH ORDINALITY AS q(v, n)")
    results = await asyncio.gather(*(reads.fetch(v) for v in range(5)), return_exceptions=True)
    assert all(isinstance(r, asyncpg.DivisionByZeroError) for r in results)


async def test_a_caller_that_gives_up_does_not_disturb_others(pool: asyncpg.Pool) -> None:
    slow = Coalescer(pool, "SELECT q.n, pg_sleep(0.2) IS NULL AS slept, q.v "
                           "FROM unnest($1::int[]) WITH ORDINALITY AS q(v, n)", concurrency_max=1)
    impatient = asyncio.ensure_future(asyncio.wait_for(slow.fetch(1), 0.05))
    patient = [slow.fetch(v) for v in (2, 3)]
    with pytest.raises(TimeoutError):
        await impatient
    rows = await asyncio.gather(*patient)
    assert [r["v"] for r in rows if r is not None] == [2, 3]


async def test_queue_is_bounded(pool: asyncpg.Pool) -> None:
    reads = Coalescer(pool, LOOKUP, concurrency_max=1, queue_depth_max=3)
    results = await asyncio.gather(*(reads.fetch(v) for v in range(10)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, Unavailable)]  # ours, not the driver's
    assert refused and "queue full" in str(refused[0])
    assert sum(1 for r in results if isinstance(r, asyncpg.Record)) >= 3


async def test_batches_in_flight_keep_keys_and_balances_exact(pool: asyncpg.Pool) -> None:
    await A.ensure_asset(pool, "PTS:F", "points", 0)
    op = await A.open_account(pool, "operator", "op", "PTS:F", "debit", "none")
    hot = await A.open_account(pool, "merchant", "hot", "PTS:F", "credit", "none")
    members = [await A.open_account(pool, "member", f"m{i}", "PTS:F", "credit", "non_negative") for i in range(20)]
    settings = ledger_settings(batches_inflight_max=2, batch_size_max=8, batch_linger_ms=0)
    async with Ledger(pool, settings) as led:
        # 20 callers post the same key at once, among 400 other transfers through one hot account.
        same = [led.post(transfer("same-key", [Leg(op, hot, 7)])) for _ in range(20)]
        others = [led.post(transfer(f"t-{i}", [Leg(op, hot, 1), Leg(hot, members[i % 20], 1)]))
                  for i in range(400)]
        results = await asyncio.gather(*same, *others)
    statuses = [r.status for r in results[:20]]
    assert statuses.count(Status.POSTED) == 1 and statuses.count(Status.EXISTS) == 19
    assert all(r.status is Status.POSTED for r in results[20:])
    assert await pool.fetchval("SELECT posted FROM ledger.accounts WHERE id = $1", hot) == 7
    assert sum([await pool.fetchval("SELECT posted FROM ledger.accounts WHERE id = $1", m) for m in members]) == 400
    assert not await check_books(pool)


async def test_batches_in_flight_decide_every_transfer_exactly(pool: asyncpg.Pool) -> None:
    # Members that can run dry, transfers among them at random, all at once: whatever order
    # the two batches in flight decide in, the balances are exactly the posted results.
    import random

    await A.ensure_asset(pool, "PTS:X", "points", 0)
    op = await A.open_account(pool, "operator", "op", "PTS:X", "debit", "none")
    members = [await A.open_account(pool, "member", f"x{i}", "PTS:X", "credit", "non_negative") for i in range(8)]
    rng = random.Random(20261122)
    settings = ledger_settings(batches_inflight_max=2, batch_size_max=8, batch_linger_ms=0)
    async with Ledger(pool, settings) as led:
        for m in members:
            assert (await led.post(transfer(f"fund-{m}", [Leg(op, m, 100)]))).status is Status.POSTED
        cmds = []
        for i in range(300):
            d, c = rng.sample(members, 2)
            cmds.append(transfer(f"x-{i}", [Leg(d, c, rng.randint(1, 60))]))
        results = await asyncio.gather(*(led.post(cmd) for cmd in cmds))
    expected = dict.fromkeys(members, 100)
    for cmd, res in zip(cmds, results, strict=True):
        assert res.status in (Status.POSTED, Status.DECLINED), res
        if res.status is Status.POSTED:
            leg = cmd.legs[0]
            expected[leg.debit_account_id] -= leg.amount
            expected[leg.credit_account_id] += leg.amount
        else:
            assert res.reason == "limit"
    assert {s for s in (r.status for r in results)} == {Status.POSTED, Status.DECLINED}, "both outcomes exercised"
    for m in members:
        posted = await pool.fetchval("SELECT posted FROM ledger.accounts WHERE id = $1", m)
        assert posted == expected[m] >= 0
    assert not await check_books(pool)

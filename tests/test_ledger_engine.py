"""The posting engine against a real PostgreSQL: rules the database enforces,
every malformed command, holds and their expiry, reversals, failures."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from ledger_support import ledger_settings

from ledger import accounts as A
from ledger import db as ledger_db
from ledger.audit import check_books
from ledger.commands import (
    Command,
    Kind,
    Leg,
    Status,
    capture,
    expire,
    hold,
    reverse,
    transfer,
    void,
)
from ledger.engine import Ledger, Receipt


async def _chart(pool: asyncpg.Pool) -> dict[str, int]:
    await A.ensure_asset(pool, "PTS:T", "points", 0)
    await A.ensure_asset(pool, "CNY", "money", 2)
    return {
        "op": await A.open_account(pool, "operator", "op", "PTS:T", "debit", "none"),
        "m1": await A.open_account(pool, "member", "m1", "PTS:T", "credit", "non_negative"),
        "m2": await A.open_account(pool, "member", "m2", "PTS:T", "credit", "non_negative"),
        "g1": await A.open_account(pool, "member", "g1", "PTS:T", "credit", "guarded"),
        "cash": await A.open_account(pool, "operator", "op", "CNY", "debit", "none"),
    }


async def _counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM ledger.journals) j, (SELECT count(*) FROM ledger.entries) e, "
        "(SELECT coalesce(sum(abs(posted)), 0) FROM ledger.accounts) p"
    )
    return row["j"], row["e"], row["p"]


async def test_transfer_exists_conflict(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        first = await led.post(transfer("t-1", [Leg(c["op"], c["m1"], 500)]))
        assert first.status is Status.POSTED and first.balances == {c["op"]: -500, c["m1"]: 500}
        again = await led.post(transfer("t-1", [Leg(c["op"], c["m1"], 500)]))
        assert again.status is Status.EXISTS and again.journal_id == first.journal_id
        assert again.balances == first.balances
        before = await _counts(pool)
        clash = await led.post(transfer("t-1", [Leg(c["op"], c["m1"], 501)]))
        assert clash.status is Status.CONFLICT and "different content" in (clash.detail or "")
        assert await _counts(pool) == before
    assert not await check_books(pool)


async def test_limit_decline_names_account_and_writes_nothing(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        await led.post(transfer("fund", [Leg(c["op"], c["m1"], 100)]))
        before = await _counts(pool)
        res = await led.post(transfer("over", [Leg(c["m1"], c["m2"], 101)]))
        assert res.status is Status.DECLINED and res.reason == "limit"
        assert f"account {c['m1']}" in (res.detail or "")
        assert await _counts(pool) == before
        # A multi-leg command is all or nothing: the good leg does not post either.
        res = await led.post(transfer("multi", [Leg(c["op"], c["m2"], 5), Leg(c["m1"], c["m2"], 1000)]))
        assert res.status is Status.DECLINED
        bal = await A.balance(pool, c["m2"])
        assert bal is not None and bal.posted == 0


async def test_guarded_account_goes_negative_only_when_forced(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        await led.post(transfer("g-fund", [Leg(c["op"], c["g1"], 10)]))
        plain = await led.post(transfer("g-plain", [Leg(c["g1"], c["op"], 30)]))
        assert plain.status is Status.DECLINED
        forced = await led.post(transfer("g-claw", [Leg(c["g1"], c["op"], 30)], force=True))
        assert forced.status is Status.POSTED and forced.balances[c["g1"]] == -20
        # While negative, nothing the member asks for can debit it.
        assert (await led.post(transfer("g-spend", [Leg(c["g1"], c["op"], 1)]))).status is Status.DECLINED
        # A non_negative account cannot be forced.
        nn = await led.post(transfer("nn-force", [Leg(c["m1"], c["op"], 1)], force=True))
        assert nn.status is Status.DECLINED
    assert not await check_books(pool)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: transfer("bad", [Leg(c["op"], 999_999, 5)]), "unknown account 999999"),
        (lambda c: transfer("bad", [Leg(c["op"], c["cash"], 5)]), "asset mismatch"),
        (lambda c: transfer("bad", [Leg(c["op"], c["m1"], 0)]), "amount must be a positive integer"),
        (lambda c: transfer("bad", [Leg(c["op"], c["m1"], -5)]), "amount must be a positive integer"),
        (lambda c: transfer("bad", [Leg(c["op"], c["op"], 5)]), "same account"),
        (lambda c: transfer("bad", []), "at least one leg"),
        (lambda c: transfer("bad", [Leg(c["op"], c["m1"], 1)] * 17), "too many legs"),
        (lambda c: transfer("", [Leg(c["op"], c["m1"], 1)]), "idempotency key"),
        (lambda c: Command("bad", Kind.HOLD, (Leg(c["op"], c["m1"], 1),), timeout_s=0), "hold timeout"),
        (lambda c: reverse("bad", 424242), "journal 424242 does not exist"),
        (lambda c: capture("bad", 424242), "hold 424242 does not exist"),
        (lambda c: capture("bad", 424242, legs=[Leg(c["op"], c["m1"], 1)]), "hold 424242 does not exist"),
        (lambda c: capture("bad", 1, legs=[Leg(c["op"], c["m1"], 0)]), "amount must be a positive integer"),
        (lambda c: capture("bad", 1, legs=[Leg(c["op"], c["m1"], 1)] * 16), "too many legs"),
        (lambda c: capture("bad", 0, legs=[Leg(c["op"], c["m1"], 1)]), "positive reference id"),
        (lambda c: Command("bad", Kind.VOID, (Leg(c["op"], c["m1"], 1),), ref=1), "takes no legs"),
        (lambda c: transfer("bad", [Leg(c["op"], c["m1"], 1)], guard=""), "a guard must be"),
        (lambda c: transfer("bad", [Leg(c["op"], c["m1"], 1)], guard="g" * 129), "a guard must be"),
    ],
)
async def test_invalid_commands_write_nothing(pool: asyncpg.Pool, make, message: str) -> None:  # type: ignore[no-untyped-def]
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        before = await _counts(pool)
        res = await led.post(make(c))
        assert res.status is Status.INVALID, res
        assert message in (res.detail or ""), res.detail
        assert await _counts(pool) == before


async def test_holds_capture_void_expire(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        await led.post(transfer("fund", [Leg(c["op"], c["m1"], 100)]))
        h = await led.post(hold("h1", Leg(c["m1"], c["m2"], 80), timeout_s=60))
        assert h.status is Status.POSTED
        bal = await A.balance(pool, c["m1"])
        assert bal is not None and (bal.posted, bal.held, bal.available) == (100, 80, 20)
        # The reservation is real: another debit past the available amount is declined.
        assert (await led.post(transfer("x", [Leg(c["m1"], c["m2"], 21)]))).status is Status.DECLINED
        assert h.journal_id is not None
        cap = await led.post(capture("c1", h.journal_id, 30))
        assert cap.status is Status.POSTED
        bal = await A.balance(pool, c["m1"])
        assert bal is not None and (bal.posted, bal.held) == (70, 0)
        # Resolved at most once, whatever the key.
        again = await led.post(void("v1", h.journal_id))
        assert again.status is Status.INVALID and "already captured" in (again.detail or "")
        assert (await led.post(capture("c2", h.journal_id, 80))).status is Status.INVALID
        # Void releases everything.
        h2 = await led.post(hold("h2", Leg(c["m1"], c["m2"], 70), timeout_s=60))
        assert h2.journal_id is not None
        assert (await led.post(capture("c3", h2.journal_id, 71))).status is Status.INVALID
        assert (await led.post(void("v2", h2.journal_id))).status is Status.POSTED
        # Expiry: not before its time (a 60 s hold, so a slow machine cannot pass it);
        # a capture after it is declined; expire releases.
        h5 = await led.post(hold("h5", Leg(c["m1"], c["m2"], 1), timeout_s=60))
        assert h5.journal_id is not None
        early = await led.post(expire("e0", h5.journal_id))
        assert early.status is Status.INVALID and "does not expire until" in (early.detail or "")
        assert (await led.post(void("v5", h5.journal_id))).status is Status.POSTED
        h3 = await led.post(hold("h3", Leg(c["m1"], c["m2"], 10), timeout_s=1))
        assert h3.journal_id is not None
        await asyncio.sleep(1.2)
        late = await led.post(capture("c4", h3.journal_id))
        assert late.status is Status.DECLINED and late.reason == "expired" and "expired" in (late.detail or "")
        h4 = await led.post(hold("h4", Leg(c["m1"], c["m2"], 5), timeout_s=1))
        assert (await led.post(expire("e2", h3.journal_id))).status is Status.POSTED
        await asyncio.sleep(1.1)
        assert await led.expire_due_holds() == 1  # h4, swept
        assert await led.expire_due_holds() == 0
        state = await pool.fetchval("SELECT state FROM ledger.holds WHERE id = $1", h4.journal_id)
        assert state == "expired"
        bal = await A.balance(pool, c["m1"])
        assert bal is not None and bal.held == 0
    assert not await check_books(pool)


async def test_capture_with_a_fee_leg(pool: asyncpg.Pool) -> None:
    """A capture may carry legs of its own (a fee), posted in its journal after the captured leg."""
    c = await _chart(pool)
    fee_payer = await A.open_account(pool, "merchant", "mx", "CNY", "debit", "none")
    fee_income = await A.open_account(pool, "operator", "fee", "CNY", "credit", "none")
    async with Ledger(pool, ledger_settings()) as led:
        await led.post(transfer("fund", [Leg(c["op"], c["m1"], 100)]))
        h = await led.post(hold("h1", Leg(c["m1"], c["m2"], 80), timeout_s=60))
        assert h.journal_id is not None
        fee = Leg(fee_payer, fee_income, 7)
        cap = await led.post(capture("c1", h.journal_id, legs=[fee], metadata={"why": "order 1"}))
        assert cap.status is Status.POSTED
        assert cap.balances == {c["m1"]: 20, c["m2"]: 80, fee_payer: -7, fee_income: 7}
        rows = await pool.fetch("SELECT leg, account_id, amount FROM ledger.entries WHERE journal_id = $1 "
                                "ORDER BY leg", cap.journal_id)
        assert [(r["account_id"], r["amount"]) for r in rows] == [
            (c["m1"], -80), (c["m2"], 80), (fee_payer, -7), (fee_income, 7)]
        # The same capture again: the first, with its balances; other legs: a conflict.
        again = await led.post(capture("c1", h.journal_id, legs=[fee]))
        assert again.status is Status.EXISTS and again.journal_id == cap.journal_id
        assert again.balances == cap.balances
        other = await led.post(capture("c1", h.journal_id, legs=[Leg(fee_payer, fee_income, 8)]))
        assert other.status is Status.CONFLICT
        # A capture whose fee leg would break a limit is declined whole (m1 would have 20 + 30 - 51):
        # the hold stays pending.
        h2 = await led.post(hold("h2", Leg(c["m2"], c["m1"], 30), timeout_s=60))
        assert h2.journal_id is not None
        before = await _counts(pool)
        no = await led.post(capture("c2", h2.journal_id, legs=[Leg(c["m1"], c["op"], 51)]))
        assert no.status is Status.DECLINED and no.reason == "limit"
        assert await _counts(pool) == before
        assert await pool.fetchval("SELECT state FROM ledger.holds WHERE id = $1", h2.journal_id) == "pending"
        # An expired hold's capture is declined, legs and all.
        h3 = await led.post(hold("h3", Leg(c["m2"], c["m1"], 5), timeout_s=1))
        assert h3.journal_id is not None
        before = await _counts(pool)
        await asyncio.sleep(1.1)
        late = await led.post(capture("c3", h3.journal_id, legs=[fee]))
        assert late.status is Status.DECLINED and late.reason == "expired"
        assert await _counts(pool) == before
        # Without legs, as before; several captures with legs in one batch keep their own legs.
        ha = await led.post(hold("ha", Leg(c["m2"], c["m1"], 3), timeout_s=60))
        hb = await led.post(hold("hb", Leg(c["m2"], c["m1"], 4), timeout_s=60))
        assert ha.journal_id is not None and hb.journal_id is not None
        both = await led.post_many([transfer("t", [Leg(c["op"], c["m1"], 1)]),
                                    capture("ca", ha.journal_id, legs=[Leg(fee_payer, fee_income, 1)]),
                                    capture("cb", hb.journal_id),
                                    capture("cc", h2.journal_id, legs=[Leg(fee_payer, fee_income, 2),
                                                                        Leg(fee_payer, fee_income, 3)])])
        assert [r.status for r in both] == [Status.POSTED] * 4
        counts = [await pool.fetchval("SELECT count(*) FROM ledger.entries WHERE journal_id = $1", r.journal_id)
                  for r in both]
        assert counts == [2, 4, 2, 6]
        # A capture with legs is reversed whole.
        await led.post(transfer("fund2", [Leg(c["op"], c["m2"], 100)]))
        rev = await led.post(reverse("r", cap.journal_id))
        assert rev.status is Status.POSTED
        assert rev.balances[fee_income] == 7 + 1 + 2 + 3 - 7 and rev.balances[fee_payer] == -(1 + 2 + 3)
    assert not await check_books(pool)


async def test_reverse_at_most_once(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        t = await led.post(transfer("t", [Leg(c["op"], c["m1"], 40), Leg(c["op"], c["m2"], 2)]))
        assert t.journal_id is not None
        r1 = await led.post(reverse("r1", t.journal_id))
        assert r1.status is Status.POSTED
        r2 = await led.post(reverse("r2", t.journal_id))
        assert r2.status is Status.EXISTS and r2.journal_id == r1.journal_id
        assert r1.journal_id is not None
        rr = await led.post(reverse("r3", r1.journal_id))
        assert rr.status is Status.INVALID and "reversal" in (rr.detail or "")
        j = await A.journal(pool, journal_id=r1.journal_id)
        assert j is not None and j.reverses_journal_id == t.journal_id
        assert sorted(e.amount for e in j.entries) == [-40, -2, 2, 40]
        for acc in ("m1", "m2", "op"):
            b = await A.balance(pool, c[acc])
            assert b is not None and b.posted == 0
    assert not await check_books(pool)


async def test_concurrent_debits_of_one_account_never_overspend(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings(batch_size_max=16)) as led:
        await led.post(transfer("fund", [Leg(c["op"], c["m1"], 1000)]))
        cmds = [transfer(f"spend-{i}", [Leg(c["m1"], c["m2"], 7)]) for i in range(300)]
        results = await led.post_many(cmds)
    posted = sum(1 for r in results if r.status is Status.POSTED)
    assert posted == 1000 // 7
    assert all(r.status in (Status.POSTED, Status.DECLINED) for r in results)
    bal = await A.balance(pool, c["m1"])
    assert bal is not None and bal.posted == 1000 - 7 * posted
    assert not await check_books(pool)


async def test_a_taken_guard_is_a_conflict_and_writes_nothing(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        first = await led.post(transfer("g-1", [Leg(c["op"], c["m1"], 5)], guard="comp:7:1"))
        assert first.status is Status.POSTED
        before = await _counts(pool)
        taken = await led.post(transfer("g-2", [Leg(c["op"], c["m1"], 5)], guard="comp:7:1"))
        assert taken.status is Status.CONFLICT and taken.reason == "guard", taken
        assert f"taken by journal {first.journal_id}" in (taken.detail or "")
        assert await _counts(pool) == before
        # A retransmission is recognised by its key before its guard is looked at.
        again = await led.post(transfer("g-1", [Leg(c["op"], c["m1"], 5)], guard="comp:7:2"))
        assert again.status is Status.EXISTS and again.journal_id == first.journal_id
        # Two with one guard in one batch: the first in the batch posts, the other does not.
        both = await led.post_many([transfer(f"g-{i}", [Leg(c["op"], c["m1"], 5)], guard="comp:7:3")
                                    for i in (3, 4)])
        assert [r.status for r in both] == [Status.POSTED, Status.CONFLICT]
        assert both[1].reason == "guard" and "in this batch" in (both[1].detail or "")
        # Unguarded commands beside guarded ones are not affected.
        free = await led.post_many([transfer("g-5", [Leg(c["op"], c["m1"], 5)]),
                                    transfer("g-6", [Leg(c["op"], c["m1"], 5)], guard="comp:7:4")])
        assert [r.status for r in free] == [Status.POSTED, Status.POSTED]
    bal = await A.balance(pool, c["m1"])
    assert bal is not None and bal.posted == 20
    assert not await check_books(pool)


async def test_one_guard_raced_from_two_engines_posts_once(pool: asyncpg.Pool, db_dsn: str) -> None:
    """Across connections the unique index decides: the loser's batch fails (23505), is retried,
    and then finds the guard taken."""
    c = await _chart(pool)
    other = await ledger_db.create_pool(db_dsn, 1, 4)
    try:
        async with Ledger(pool, ledger_settings()) as one, Ledger(other, ledger_settings()) as two:
            for n in range(20):
                results = await asyncio.gather(
                    one.post(transfer(f"a-{n}", [Leg(c["op"], c["m1"], 1)], guard=f"race:{n}")),
                    two.post(transfer(f"b-{n}", [Leg(c["op"], c["m1"], 1)], guard=f"race:{n}")))
                assert sorted(r.status for r in results) == [Status.CONFLICT, Status.POSTED], results
    finally:
        await other.close()
    bal = await A.balance(pool, c["m1"])
    assert bal is not None and bal.posted == 20
    assert not await check_books(pool)


async def test_observer_hears_each_batch_start_and_end(pool: asyncpg.Pool) -> None:
    # What switchd_ledger_queue_wait_seconds and the batch histograms are fed from.
    c = await _chart(pool)

    class Heard:  # a BatchObserver
        def __init__(self) -> None:
            self.waits: list[float] = []
            self.sizes: list[int] = []

        def batch_queued(self, seconds: float) -> None:
            self.waits.append(seconds)

        def batch_done(self, size: int, seconds: float, retries: int, failed: bool) -> None:
            self.sizes.append(size)

    heard = Heard()
    async with Ledger(pool, ledger_settings(batch_linger_ms=20.0), observer=heard) as led:
        results = await led.post_many([transfer(f"obs-{i}", [Leg(c["op"], c["m1"], 1)]) for i in range(5)])
    assert all(r.status is Status.POSTED for r in results)
    assert sum(heard.sizes) == 5 and len(heard.waits) == len(heard.sizes)
    # The first batch lingered for company: its oldest command waited at least the linger.
    assert 0.015 <= heard.waits[0] < 5.0, heard.waits


async def test_receipt_stored_with_posting(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        def receipt(res):  # type: ignore[no-untyped-def]
            return Receipt("rk-1", b"h" * 32, f"{res.status}:{res.journal_id}".encode())

        res = await led.post(transfer("rk-1", [Leg(c["op"], c["m1"], 3)]), receipt=receipt)
        stored = await A.get_receipt(pool, "rk-1")
        assert stored == (b"h" * 32, f"posted:{res.journal_id}".encode())
        jid = await pool.fetchval("SELECT journal_id FROM ledger.receipts WHERE idempotency_key='rk-1'")
        assert jid == res.journal_id


async def test_batch_failure_answers_every_waiter(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings(retries_max=1, timeout_post_s=5)) as led:
        await pool.execute("ALTER FUNCTION ledger.post_batch RENAME TO post_batch_gone")
        try:
            results = await asyncio.wait_for(
                led.post_many([transfer(f"f{i}", [Leg(c["op"], c["m1"], 1)]) for i in range(20)]), 10
            )
        finally:
            await pool.execute("ALTER FUNCTION ledger.post_batch_gone RENAME TO post_batch")
        assert all(r.status is Status.ERROR and "batch failed" in (r.detail or "") for r in results)
        assert (await _counts(pool))[0] == 0
        # The engine recovers once the database does.
        ok = await led.post(transfer("after", [Leg(c["op"], c["m1"], 1)]))
        assert ok.status is Status.POSTED


async def test_queue_bound(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings(queue_depth_max=5, batch_linger_ms=50)) as led:
        results = await led.post_many([transfer(uuid.uuid4().hex, [Leg(c["op"], c["m1"], 1)]) for _ in range(40)])
    assert any(r.status is Status.ERROR and "queue full" in (r.detail or "") for r in results)
    assert any(r.status is Status.POSTED for r in results)
    assert not await check_books(pool)


async def test_database_refuses_mutation_and_imbalance(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings()) as led:
        t = await led.post(transfer("t", [Leg(c["op"], c["m1"], 9)]))
        h = await led.post(hold("h", Leg(c["m1"], c["m2"], 2), timeout_s=60))
        assert h.journal_id is not None
        await led.post(void("v", h.journal_id))
    for sql in (
        "UPDATE ledger.entries SET amount = amount + 1",
        "DELETE FROM ledger.entries",
        "UPDATE ledger.journals SET kind = 'transfer'",
        "DELETE FROM ledger.journals",
        "TRUNCATE ledger.entries CASCADE",
        "UPDATE ledger.holds SET state = 'pending', resolved_by = NULL",
        "DELETE FROM ledger.holds",
    ):
        with pytest.raises(asyncpg.PostgresError):
            await pool.execute(sql)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="does not balance"):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ledger.journals(id, idempotency_key, content_hash, kind, business_date) "
                    "VALUES (nextval('ledger.journal_id_seq'), 'raw', '\\x00', 'transfer', current_date)"
                )
                await conn.execute(
                    "INSERT INTO ledger.entries(journal_id, leg, account_id, asset, amount, balance_after) "
                    "VALUES (currval('ledger.journal_id_seq'), 1, $1, 'PTS:T', 5, 5)", c["m1"]
                )
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE ledger.accounts SET posted = -1 WHERE id = $1", c["m2"])
        # References are checked per statement: an entry must name an existing
        # account in its own asset, and an existing journal.
        for account_sql, asset, message in (
            ("$1", "CNY", "which does not exist"),  # m1 is a points account
            ("999999", "PTS:T", "which does not exist"),
        ):
            with pytest.raises(asyncpg.PostgresError, match=message):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO ledger.journals(id, idempotency_key, content_hash, kind, business_date) "
                        "VALUES (nextval('ledger.journal_id_seq'), $1, '\\x00', 'transfer', current_date)",
                        f"raw-{asset}-{account_sql}")
                    await conn.execute(
                        "INSERT INTO ledger.entries(journal_id, leg, account_id, asset, amount, balance_after) "
                        f"VALUES (currval('ledger.journal_id_seq'), 1, {account_sql}, '{asset}', 5, 5), "
                        f"(currval('ledger.journal_id_seq'), 2, {account_sql}, '{asset}', -5, 0)",
                        *([c["m1"]] if account_sql == "$1" else []))
        with pytest.raises(asyncpg.PostgresError, match="journal 987654 does not exist"):
            await conn.execute(
                "INSERT INTO ledger.entries(journal_id, leg, account_id, asset, amount, balance_after) "
                "VALUES (987654, 1, $1, 'PTS:T', 5, 5), (987654, 2, $2, 'PTS:T', -5, 0)", c["m1"], c["m2"])
        # Accounts are never deleted nor re-keyed.
        for sql in ("DELETE FROM ledger.accounts WHERE id = $1", "UPDATE ledger.accounts SET asset = 'CNY' WHERE id = $1"):
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(sql, c["m2"])
    assert t.status is Status.POSTED
    assert not await check_books(pool)


async def test_a_caller_that_gave_up_before_its_batch_left_posts_nothing(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    # The writer lingers 300 ms to fill a batch; the caller waits only 50 ms.
    async with Ledger(pool, ledger_settings(batch_linger_ms=300, timeout_post_s=0.05)) as led:
        res = await led.post(transfer("gave-up", [Leg(c["op"], c["m1"], 5)]))
        assert res.status is Status.ERROR and "nothing was posted" in (res.detail or "") and res.reason is None
        await asyncio.sleep(0.5)  # past the linger: the batch would have left by now
    assert await A.journal(pool, idempotency_key="gave-up") is None
    assert (await _counts(pool))[0] == 0


async def test_one_failing_command_does_not_fail_its_batch(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings(batch_linger_ms=50)) as led:
        def bad_receipt(res):  # type: ignore[no-untyped-def]
            return Receipt("k" * 200, b"h" * 32, b"x")  # breaks receipts' key-length CHECK

        posts = [led.post(transfer(f"ok-{i}", [Leg(c["op"], c["m1"], 1)])) for i in range(7)]
        posts.insert(3, led.post(transfer("bad-receipt", [Leg(c["op"], c["m1"], 1)]), receipt=bad_receipt))
        results = await asyncio.gather(*posts)
    statuses = [r.status for r in results]
    assert statuses[3] is Status.ERROR and "check constraint" in (results[3].detail or "")
    assert statuses[:3] + statuses[4:] == [Status.POSTED] * 7
    assert await A.journal(pool, idempotency_key="bad-receipt") is None
    bal = await A.balance(pool, c["m1"])
    assert bal is not None and bal.posted == 7
    assert not await check_books(pool)


async def test_a_receipt_function_that_raises_is_answered_at_once(pool: asyncpg.Pool) -> None:
    c = await _chart(pool)
    async with Ledger(pool, ledger_settings(timeout_post_s=30)) as led:
        def broken(res):  # type: ignore[no-untyped-def]
            raise ValueError("bug in a receipt builder")

        started = asyncio.get_running_loop().time()
        res = await led.post(transfer("raises", [Leg(c["op"], c["m1"], 1)]), receipt=broken)
        assert res.status is Status.ERROR and "ValueError: bug in a receipt builder" in (res.detail or "")
        assert asyncio.get_running_loop().time() - started < 5, "not left to the 30 s bound"
        # Nothing of that batch was committed, and the writer goes on.
        assert await A.journal(pool, idempotency_key="raises") is None
        assert (await led.post(transfer("after", [Leg(c["op"], c["m1"], 1)]))).status is Status.POSTED
    assert not await check_books(pool)


async def test_the_writer_gives_its_connection_back_after_batches_per_connection_max(db_dsn: str) -> None:
    # The writer keeps a connection between batches; after batches_per_connection_max it
    # releases it, and asyncpg replaces a connection released after max_queries: fresh
    # backends and plans on time, not only at a restart (docs/operating.md, PostgreSQL).
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4, max_queries=3,
                                     init=ledger_db.init_connection)
    try:
        c = await _chart(pool)
        settings = ledger_settings(batches_per_connection_max=2, batch_linger_ms=0, batches_inflight_max=1)
        backends: list[int] = []
        async with Ledger(pool, settings) as led:
            for n in range(12):
                res = await led.post(transfer(f"recycle-{n}", [Leg(c["op"], c["m1"], 1)]))
                assert res.status is Status.POSTED, res
                backends += [conn.get_server_pid() for conn, _ in led._idle_conns]
        # Kept for two batches at most, then replaced: never three batches on one backend.
        assert len(set(backends)) >= 4 and max(backends.count(pid) for pid in backends) <= 2, backends
        bal = await A.balance(pool, c["m1"])
        assert bal is not None and bal.posted == 12
        assert not await check_books(pool)
    finally:
        await pool.close()

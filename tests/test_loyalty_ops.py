"""Loyalty operations against a real database through the real Ledger: every operation, every decline."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from ledger_support import ledger_settings

from ledger.audit import check_books
from ledger.engine import Ledger, Receipt
from ledger.loyalty import card_numbers, demo
from ledger.loyalty.cards import set_card_status
from ledger.loyalty.merchants import set_merchant_status
from ledger.loyalty.operations import Loyalty
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from switch.handlers.responses import response_code

PAN1, PAN2, PAN3 = demo.demo_pan(1), demo.demo_pan(2), demo.demo_pan(3)
_stan = itertools.count(1)


def req(merchant: str = "M0001", terminal: str = "T0000001", pan: str = PAN1, amount: int = 100,
        currency: str | None = "156", **kw: object) -> Request:
    n = next(_stan)
    return Request(key=f"{terminal}|{n:06d}|0101120000", terminal_id=terminal, merchant_id=merchant, pan=pan,
                   amount=amount, currency=currency, rrn=f"{n:012d}", stan=f"{n:06d}", **kw)  # type: ignore[arg-type]


@dataclass
class World:
    pool: asyncpg.Pool
    ledger: Ledger
    loy: Loyalty

    async def member(self, pan: str, purpose: str, asset: str) -> int:
        v = await self.pool.fetchval("SELECT a.posted FROM ledger.accounts a JOIN loyalty.cards c ON a.owner_id = c.id::text "
            "WHERE a.owner_kind='card' AND c.id = $1 AND a.purpose=$2 AND a.asset=$3",
                await card_numbers.card_id_by_number(self.pool, pan), purpose, asset)
        return int(v or 0)

    async def points(self, pan: str = PAN1, program: str = "ALLY") -> int:
        return await self.member(pan, "points", f"PTS:{program}")

    async def sv(self, pan: str = PAN1) -> int:
        return await self.member(pan, "stored_value", "CNY")

    async def account(self, owner_kind: str, owner_id: str, purpose: str, asset: str) -> int:
        v = await self.pool.fetchval(
            "SELECT posted FROM ledger.accounts WHERE owner_kind=$1 AND owner_id=$2 AND purpose=$3 AND asset=$4",
            owner_kind, owner_id, purpose, asset)
        return int(v)

    async def clearing(self, merchant: str, asset: str) -> int:
        return await self.account("merchant", merchant, "clearing", asset)

    async def books_ok(self) -> None:
        assert await check_books(self.pool) == []


@pytest.fixture
async def world(pool: asyncpg.Pool) -> AsyncIterator[World]:
    async with pool.acquire() as conn, conn.transaction():
        await demo.seed(conn)
    async with Ledger(pool, ledger_settings()) as ledger:
        yield World(pool, ledger, Loyalty(ledger))


def ok(o: Outcome) -> Outcome:
    assert o.reason is Reason.APPROVED, (o.reason, o.detail)
    assert o.journal_id is not None and o.approval_code is not None
    return o


async def test_earn_credits_member_and_debits_issuing_merchant(world: World) -> None:
    o = ok(await world.loy.earn(req(amount=12_345)))  # 123.45 CNY at 1 point per CNY, fee 50 bps
    assert (o.points_earned, o.points_balance, o.reason) == (123, 123, Reason.APPROVED)
    assert await world.points() == 123
    assert await world.clearing("M0001", "PTS:ALLY") == -123
    assert await world.clearing("M0001", "CNY") == -61
    assert await world.account("operator", "CNY", "fee_income", "CNY") == 61
    row = await world.pool.fetchrow("SELECT * FROM loyalty.transactions WHERE journal_id=$1", o.journal_id)
    assert (row["txn_type"], row["points_delta"], row["fee_minor"], row["reason"]) == ("earn", 123, 61, "approved")
    await world.books_ok()


async def test_earn_of_nothing_still_journals(world: World) -> None:
    o = ok(await world.loy.earn(req(amount=99)))  # 0.99 CNY: no point, no fee
    assert (o.points_earned, o.points_balance) == (0, 0)
    await world.books_ok()


async def test_redeem_topup_load_spend(world: World) -> None:
    ok(await world.loy.topup(req(amount=500, currency=None)))
    o = ok(await world.loy.redeem(req(merchant="M0002", terminal="T0000002", amount=200, currency=None)))
    assert (o.points_redeemed, o.points_balance, o.sv_balance_minor) == (200, 300, None)
    assert await world.clearing("M0002", "PTS:ALLY") == 200
    o = await world.loy.redeem(req(amount=301, currency=None))
    assert o.reason is Reason.INSUFFICIENT
    ok(await world.loy.load(req(amount=10_000)))
    o = ok(await world.loy.sv_purchase(req(amount=2_500)))
    assert o.sv_balance_minor == 7_500
    assert (await world.loy.sv_purchase(req(amount=7_501))).reason is Reason.INSUFFICIENT
    assert await world.sv() == 7_500
    await world.books_ok()


async def test_inquiry(world: World) -> None:
    ok(await world.loy.topup(req(amount=50, currency=None)))
    o = await world.loy.inquiry(req(amount=0, account="00"))
    assert (o.reason, o.points_balance, o.sv_balance_minor, o.journal_id) == (Reason.APPROVED, 50, 0, None)
    o = await world.loy.inquiry(req(amount=0, account="65"))
    assert (o.points_balance, o.sv_balance_minor) == (50, None)


async def test_card_and_merchant_and_amount_declines(world: World) -> None:
    assert (await world.loy.earn(req(pan="6212340000000000"))).reason is Reason.CARD_UNKNOWN
    await set_card_status(world.pool, PAN2, "blocked")
    assert (await world.loy.load(req(pan=PAN2))).reason is Reason.CARD_BLOCKED
    await world.pool.execute("UPDATE loyalty.cards SET expiry='2001' WHERE id = $1",
        await card_numbers.card_id_by_number(world.pool, PAN3))
    assert (await world.loy.load(req(pan=PAN3))).reason is Reason.CARD_EXPIRED
    assert (await world.loy.load(req(amount=0))).reason is Reason.INVALID_AMOUNT
    assert (await world.loy.load(req(amount=10_000_001))).reason is Reason.EXCEEDS_LIMIT
    assert (await world.loy.redeem(req(amount=10_000_001, currency=None))).reason is Reason.EXCEEDS_LIMIT
    assert (await world.loy.earn(req(merchant="NOPE"))).reason is Reason.MERCHANT_UNKNOWN
    await set_merchant_status(world.pool, "M0002", "disabled")
    assert (await world.loy.earn(req(merchant="M0002"))).reason is Reason.MERCHANT_INACTIVE
    n = await world.pool.fetchval("SELECT count(*) FROM loyalty.transactions WHERE journal_id IS NULL")
    assert n == 8
    await world.books_ok()


async def test_duplicate_is_replayed_and_different_content_is_94(world: World) -> None:
    r = req(amount=1_000)
    a = ok(await world.loy.earn(r))
    b = await world.loy.earn(r)
    assert b.replayed and (b.journal_id, b.points_balance, b.approval_code) == (a.journal_id, 10, a.approval_code)
    c = await world.loy.earn(dataclasses.replace(r, amount=2_000))
    assert c.reason is Reason.DUPLICATE_MISMATCH
    assert await world.points() == 10
    # A retransmission that reaches the domain (no stored response, another RRN assigned)
    # is answered with the RRN of the first answer, which is the one on record.
    d = await world.loy.earn(dataclasses.replace(r, rrn="999999999999"))
    assert d.replayed and d.rrn == r.rrn and d.journal_id == a.journal_id


async def test_void(world: World) -> None:
    e = ok(await world.loy.earn(req(amount=10_000)))
    earn_rrn = f"{int(e.journal_id or 0)}"  # not the RRN: must be 25
    assert (await world.loy.void(req(amount=10_000, original_rrn=earn_rrn))).reason is Reason.ORIGINAL_NOT_FOUND
    rrn = await world.pool.fetchval("SELECT rrn FROM loyalty.transactions WHERE journal_id=$1", e.journal_id)
    assert (await world.loy.void(req(amount=10_000, original_rrn=rrn, account="65"))).reason is Reason.INVALID_TXN
    assert (await world.loy.void(req(terminal="T0000009", amount=10_000, original_rrn=rrn))).reason is Reason.INVALID_TXN
    assert (await world.loy.void(req(amount=9_999, original_rrn=rrn))).reason is Reason.INVALID_AMOUNT
    v = ok(await world.loy.void(req(amount=10_000, original_rrn=rrn)))
    assert (v.points_redeemed, v.points_balance) == (100, 0)
    assert (await world.loy.void(req(amount=10_000, original_rrn=rrn))).reason is Reason.INVALID_TXN
    assert (await world.loy.refund(req(amount=1, original_rrn=rrn))).reason is Reason.INVALID_TXN
    assert await world.clearing("M0001", "PTS:ALLY") == 0
    assert await world.clearing("M0001", "CNY") == 0
    await world.books_ok()


async def test_void_of_spent_load_is_declined(world: World) -> None:
    r = req(amount=1_000)
    ok(await world.loy.load(r))
    ok(await world.loy.sv_purchase(req(amount=600)))
    o = await world.loy.void(req(amount=1_000, original_rrn=r.rrn, account="60"))
    assert o.reason is Reason.INSUFFICIENT
    assert await world.sv() == 400


async def test_partial_refunds_claw_back_in_proportion(world: World) -> None:
    r = req(amount=1_001)  # 10 points, fee 5
    ok(await world.loy.earn(r))
    ok(await world.loy.redeem(req(amount=8, currency=None)))
    a = ok(await world.loy.refund(req(amount=500, original_rrn=r.rrn)))
    assert (a.points_redeemed, a.points_balance) == (4, -2)  # may go negative through a claw-back
    assert (await world.loy.redeem(req(amount=1, currency=None))).reason is Reason.INSUFFICIENT
    assert (await world.loy.refund(req(amount=502, original_rrn=r.rrn))).reason is Reason.EXCEEDS_LIMIT
    ok(await world.loy.refund(req(amount=500, original_rrn=r.rrn)))
    ok(await world.loy.refund(req(amount=1, original_rrn=r.rrn)))
    assert await world.points() == -8  # all 10 clawed back, exactly
    assert await world.clearing("M0001", "CNY") == 0  # fee given back in full
    assert (await world.loy.refund(req(amount=1, original_rrn=r.rrn))).reason in (Reason.INVALID_TXN, Reason.EXCEEDS_LIMIT)
    await world.books_ok()


async def test_refund_of_redeem_and_sv_purchase_credit_back(world: World) -> None:
    ok(await world.loy.topup(req(amount=100, currency=None)))
    r = req(amount=60, currency=None)
    ok(await world.loy.redeem(r))
    assert ok(await world.loy.refund(req(amount=20, currency=None, original_rrn=r.rrn, account="65"))).points_balance == 60
    t = req(amount=100, currency=None)
    ok(await world.loy.topup(t))
    assert (await world.loy.refund(req(amount=1, original_rrn=t.rrn, account="65"))).reason is Reason.INVALID_TXN
    await world.books_ok()


async def test_lottery(world: World) -> None:
    ok(await world.loy.topup(req(amount=100, currency=None)))
    assert (await world.loy.lottery(req(amount=9, currency=None))).reason is Reason.INVALID_AMOUNT
    seen = set()
    for _ in range(8):
        o = ok(await world.loy.lottery(req(amount=10, currency=None)))
        seen.add(o.prize_code)
        meta = await world.pool.fetchval("SELECT metadata FROM ledger.journals WHERE id=$1", o.journal_id)
        assert meta["draw"]["prize_code"] == o.prize_code and 0 <= meta["draw"]["random"] < 100
    assert seen <= {"NONE", "SMALL", "BIG"}
    pool = await world.account("operator", "ALLY", "prize_pool", "PTS:ALLY")
    assert await world.points() == 100 - pool
    lottery_rrn = await world.pool.fetchval("SELECT rrn FROM loyalty.transactions WHERE txn_type='lottery' "
                                              "AND journal_id IS NOT NULL LIMIT 1")
    assert (await world.loy.void(req(amount=10, original_rrn=lottery_rrn, account="65"))).reason is Reason.INVALID_TXN
    assert (await world.loy.lottery(req(merchant="M0003", terminal="T0000003", pan=PAN2, amount=10, currency=None))).reason is Reason.NOT_PERMITTED
    await world.books_ok()


async def test_reversal(world: World) -> None:
    r = req(amount=5_000)
    ok(await world.loy.earn(r))
    rev = req(amount=5_000, original_key=r.key)
    o = ok(await world.loy.reverse(rev))
    assert o.points_balance == 0
    again = await world.loy.reverse(rev)
    assert again.replayed and again.journal_id == o.journal_id
    other = await world.loy.reverse(req(amount=5_000, original_key=r.key))  # an advice with its own key
    assert other.reason is Reason.APPROVED and other.journal_id is None
    assert await world.points() == 0
    await world.books_ok()


async def test_reversal_of_declined_and_unknown_originals(world: World) -> None:
    d = req(amount=5, currency=None)
    assert (await world.loy.redeem(d)).reason is Reason.INSUFFICIENT
    o = await world.loy.reverse(req(original_key=d.key))
    assert o.reason is Reason.APPROVED and o.journal_id is None
    late = req(amount=5_000)
    o = await world.loy.reverse(req(original_key=late.key))
    assert o.reason is Reason.ORIGINAL_NOT_FOUND
    assert (await world.loy.reverse(req(original_key=late.key))).reason is Reason.ORIGINAL_NOT_FOUND
    o = await world.loy.earn(late)
    assert o.reason is Reason.ORIGINAL_REVERSED and o.journal_id is None
    assert await world.points() == 0
    await world.books_ok()


async def test_partial_reversal_and_reversal_of_a_void(world: World) -> None:
    r = req(amount=10_000)
    ok(await world.loy.earn(r))
    o = ok(await world.loy.reverse(req(original_key=r.key, replacement_amount=4_000)))
    assert o.points_balance == 40
    r2 = req(amount=1_000, currency=None)
    ok(await world.loy.topup(r2))
    v = req(amount=1_000, original_rrn=r2.rrn, account="65")
    ok(await world.loy.void(v))
    assert await world.points() == 40
    ok(await world.loy.reverse(req(original_key=v.key)))
    assert await world.points() == 1_040
    twice = await world.loy.reverse(req(original_key=v.key))  # an advice with its own key
    assert twice.reason is Reason.APPROVED and twice.journal_id is None and "already" in twice.detail
    assert await world.points() == 1_040
    ok(await world.loy.void(req(amount=1_000, original_rrn=r2.rrn, account="65")))  # voidable again
    assert await world.points() == 40
    await world.books_ok()


async def test_receipt_is_stored_with_posting_and_with_decline(world: World) -> None:
    def receipt_for(r: Request) -> object:
        def make(o: Outcome) -> Receipt:
            return Receipt(r.key, b"h", f"{response_code(o.reason)}:{o.points_balance}".encode())
        return make

    a = req(amount=1_000)
    o = ok(await world.loy.earn(a, receipt=receipt_for(a)))  # type: ignore[arg-type]
    row = await world.pool.fetchrow("SELECT payload, journal_id FROM ledger.receipts WHERE idempotency_key=$1", a.key)
    assert (bytes(row["payload"]), row["journal_id"]) == (b"00:10", o.journal_id)
    b = req(amount=99, currency=None)
    await world.loy.redeem(b, receipt=receipt_for(b))  # type: ignore[arg-type]
    row = await world.pool.fetchrow("SELECT payload, journal_id FROM ledger.receipts WHERE idempotency_key=$1", b.key)
    assert (bytes(row["payload"]), row["journal_id"]) == (b"51:None", None)


async def test_operations_leave_no_reference_cycles(world: World) -> None:
    """What a request builds is freed by reference counting, never left to the cycle collector.

    A guard: a reference cycle made per request would leave objects for the collector at the
    request rate, with their Context, Record and receipt.
    """
    def receipt_for(r: Request) -> object:
        def make(o: Outcome) -> Receipt:
            return Receipt(r.key, b"h", response_code(o.reason).encode())
        return make

    ok(await world.loy.topup(req(amount=1_000, currency=None)))  # first use: caches, prepared statements
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        a = req(amount=1_000)  # the receipt built in the posting's transaction
        ok(await world.loy.earn(a, receipt=receipt_for(a)))  # type: ignore[arg-type]
        b = req(amount=100, currency=None, receipt_key="rk-b", receipt_hash=b"hb")  # by reference
        ok(await world.loy.redeem(b, receipt=receipt_for(b)))  # type: ignore[arg-type]
        c = req(amount=100, original_rrn="999999999999")  # a compensation declined: no original
        assert (await world.loy.void(c, receipt=receipt_for(c))).reason is Reason.ORIGINAL_NOT_FOUND  # type: ignore[arg-type]
        ok(await world.loy.refund(req(amount=500, original_rrn=a.rrn)))
        gc.collect()
        ours = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.split(".")[0] in ("ledger", "switch")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []


async def test_concurrent_redemptions_never_overspend(world: World) -> None:
    ok(await world.loy.topup(req(amount=1_000, currency=None)))
    outcomes = await asyncio.gather(*(world.loy.redeem(req(amount=70, currency=None)) for _ in range(40)))
    approved = [o for o in outcomes if o.approved]
    assert len(approved) == 14 and all(o.reason is Reason.INSUFFICIENT for o in outcomes if not o.approved)
    assert await world.points() == 20
    await world.books_ok()


async def test_concurrent_refunds_never_exceed_the_original(world: World) -> None:
    r = req(amount=10_000)
    ok(await world.loy.earn(r))
    outcomes = await asyncio.gather(*(world.loy.refund(req(amount=700, original_rrn=r.rrn)) for _ in range(20)))
    assert sum(o.approved for o in outcomes) == 14
    assert {o.reason for o in outcomes} == {Reason.APPROVED, Reason.EXCEEDS_LIMIT}
    total = await world.pool.fetchval("SELECT sum(amount) FROM loyalty.transactions WHERE txn_type='refund' "
                                      "AND journal_id IS NOT NULL")
    assert total == 9_800
    await world.books_ok()


def test_earn_concerns_both_accounts() -> None:
    assert TxnType.EARN.account == "00"

"""The loyalty and stored-value transactions: one ledger command per request, idempotent on its key.

``Loyalty(ledger)`` offers one coroutine per transaction (earn, redeem,
sv_purchase, topup, load, inquiry, lottery, void, refund, reverse). Each takes
a :class:`~ledger.loyalty.outcomes.Request` and an optional receipt function,
reads its context in one round trip, decides, and posts at most one command
through ``Ledger.post`` (batched with its neighbours). A receipt is stored in
the posting's own transaction; for outcomes that post nothing it is stored with
the decline record. System errors store no receipt, so a retry gets an answer.

Concurrency: the ledger's limit checks keep concurrent debits of one card from
overspending. Voids, refunds and reversals of one original are optimistic: each
reads what stands against the original (with its family's version), decides, and
posts under the guard key ``comp:<original>:<version + 1>`` (see
``ledger.commands.Command.guard``). Two that decided on the same standing cannot
both post: the loser's guard is taken, and it reads again and decides again. So two
refunds can never together exceed the original, across processes, and no database
lock or connection is held across the batched posting. In one process they also
queue on an in-process lock per original, so that they do not race one another.
A reversal whose original is unknown posts a *marker* journal under the
original's idempotency key: the journals' unique key then turns the late
original into a conflict, which is answered as a decline and posts nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import hashlib
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ledger.accounts import StoredReceipt, get_receipt, open_account
from ledger.coalesce import Coalescer
from ledger.commands import Command, Leg, Result, Status, transfer
from ledger.engine import SENT_MARK, Ledger, Receipt, ReceiptRef
from ledger.engine import UNKNOWN as LEDGER_UNKNOWN
from ledger.errors import SwitchdError, Unavailable, first_line, timeout_named
from ledger.loyalty import card_numbers, exchange, lookup, lots
from ledger.loyalty.lookup import Context, Original, PostedLeg
from ledger.loyalty.outcomes import (
    REFUNDABLE,
    VOIDABLE,
    Channel,
    Outcome,
    OutcomeReceiptFn,
    Reason,
    Request,
    TxnType,
    approval_code,
)
from ledger.loyalty.preauth import DEFAULT_SETTINGS as PREAUTH_DEFAULTS
from ledger.loyalty.preauth import PreauthSettings, complete, place, release
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rules import earned_points, fee_bps_for, fee_minor, is_expired, undo_targets

# Reads and decisions of one compensation before it gives up on an original that keeps
# changing under it. Each lost attempt means another compensation of it posted: a loser
# can be overtaken once per compensation another process has queued for the same original,
# so the bound is generous, and a short random pause after each loss breaks lockstep.
GUARD_ATTEMPTS_MAX = 64
GUARD_PAUSE_MAX_S = 0.002
ROLE_POINTS = "card:points"
ROLE_SV = "card:stored_value"
ROLE_FEE = "operator:fee_income"
# Memo journals go 1 unit there and back; a reversal's marker goes 2, so that a
# marker never has the same content as a memo-only original under the same key.
MEMO_UNITS = 1
# Outcomes that posted nothing (declines, inquiries): the loyalty.transactions row and the
# switch's receipt, for many requests, in one statement (atomic, as one statement is). When a
# receipt is already stored under the key (an identical request decided a moment before, or
# two in this very statement), the request is neither recorded nor answered with its own
# outcome: ``recorded`` is false, and the caller answers with what is stored. The receipts go
# through ledger.store_receipts (the runtime roles may not insert them), in one call.
_RECORD_UNPOSTED_SQL = """
WITH rows AS (
    SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::text[], $13::bigint[],
                         $14::text[], $15::bytea[], $16::bytea[], $17::text[], $18::text[])
           WITH ORDINALITY AS q(key, business_date, txn_type, reason, rrn, stan, terminal_id, merchant_id,
                                card_id, program, amount, currency, original_journal_id,
                                receipt_key, receipt_hash, receipt_payload, channel, operator_ref, n)
), firsts AS (
    SELECT DISTINCT ON (receipt_key) receipt_key, n FROM rows WHERE receipt_key IS NOT NULL ORDER BY receipt_key, n
), receipt AS MATERIALIZED (
    SELECT s.key AS idempotency_key
      FROM (SELECT array_agg(r.receipt_key ORDER BY r.n) AS keys, array_agg(r.receipt_hash ORDER BY r.n) AS hashes,
                   array_agg(r.receipt_payload ORDER BY r.n) AS payloads
              FROM rows r JOIN firsts f ON f.n = r.n) a
     CROSS JOIN LATERAL ledger.store_receipts(a.keys, a.hashes, a.payloads, NULL) AS s(key)
     WHERE a.keys IS NOT NULL
), kept AS (
    SELECT r.n FROM rows r
     WHERE r.receipt_key IS NULL
        OR r.n IN (SELECT f.n FROM firsts f JOIN receipt k ON k.idempotency_key = f.receipt_key)
), txn AS (
    INSERT INTO loyalty.transactions(idempotency_key, business_date, txn_type, reason, rrn, stan, terminal_id,
                                     merchant_id, card_id, program, amount, currency, original_journal_id,
                                     channel, operator_ref)
    SELECT key, business_date, txn_type, reason, rrn, stan, terminal_id, merchant_id, card_id, program,
           amount, currency, original_journal_id, channel, operator_ref FROM rows WHERE n IN (SELECT n FROM kept)
)
SELECT n, n IN (SELECT n FROM kept) AS recorded FROM rows
"""
MARKER_UNITS = 2


class _GuardTaken(SwitchdError):
    """A compensation's guard was taken: another one decided on the same standing first."""


def _guard(root: int, version: int) -> str:
    """The guard of the compensation that follows ``version`` others in ``root``'s family."""
    return f"comp:{root}:{version + 1}"


class Loyalty:
    """The domain operations over a running :class:`~ledger.engine.Ledger`."""

    def __init__(self, ledger: Ledger, pool: asyncpg.Pool | None = None, lock_timeout_s: float = 2.0,
                 today: Any = None, coalesced_inflight_max: int = 2, coalesced_linger_s: float = 0.0,
                 preauth: PreauthSettings | None = None,
                 exchange_settings: exchange.ExchangeSettings = exchange.DEFAULT_SETTINGS) -> None:
        self.ledger = ledger
        self.exchange_settings = exchange_settings
        # Pre-authorisations' hold lives (ledger/loyalty/preauth.py).
        self.preauth = preauth or PREAUTH_DEFAULTS
        self.pool: asyncpg.Pool = pool or ledger.pool
        self.lock_timeout_s = lock_timeout_s
        # Each coalesced statement (context reads, decline records) has this many in flight at once.
        self._contexts = lookup.context_reader(self.pool, concurrency_max=coalesced_inflight_max,
                                               linger_s=coalesced_linger_s)
        self._unposted_records = Coalescer(self.pool, _RECORD_UNPOSTED_SQL, split_on_error=True,
                                           concurrency_max=coalesced_inflight_max, linger_s=coalesced_linger_s)
        self._local_locks: dict[int, asyncio.Lock] = {}
        self._local_waiters: dict[int, int] = {}
        # The card-number keys, opened on first use (or by open_vault at start).
        self._vault: card_numbers.CardVault | None = None
        # Compensations that found their guard taken and decided again (for metrics).
        self.overtaken_total = 0
        # Calendar date for card expiry; injectable for tests.
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())

    async def open_vault(self) -> card_numbers.CardVault:
        """Open the card-number keys now (the daemon does at start, so that a missing or wrong
        master key stops it with one line instead of declining every request)."""
        return await self._open_vault()

    async def card_hash(self, pan: str) -> bytes:
        """The keyed hash that finds the card numbered ``pan`` (the keys opened once per process)."""
        vault = self._vault or await self._open_vault()
        return vault.lookup_hash(pan)

    async def _open_vault(self) -> card_numbers.CardVault:
        self._vault = await card_numbers.vault(self.pool)
        return self._vault

    def coalescers(self) -> dict[str, Coalescer]:
        """The coalesced statements this uses, by name (for metrics)."""
        return {"loyalty_context": self._contexts, "loyalty_unposted": self._unposted_records}

    # ------------------------------------------------------------ public operations

    async def earn(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Purchase, earn points: floor(amount x merchant earn rate) to the member."""
        return await self._guarded(TxnType.EARN, req, receipt)

    async def redeem(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Redeem ``amount`` points at the merchant."""
        return await self._guarded(TxnType.REDEEM, req, receipt)

    async def sv_purchase(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Pay ``amount`` (minor units) from stored value."""
        return await self._guarded(TxnType.SV_PURCHASE, req, receipt)

    async def topup(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Top up ``amount`` points (the merchant collected the money)."""
        return await self._guarded(TxnType.TOPUP, req, receipt)

    async def load(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Load ``amount`` (minor units) of stored value (the merchant collected the cash)."""
        return await self._guarded(TxnType.LOAD, req, receipt)

    async def lottery(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Stake the program's draw price; a prize is drawn with ``secrets``."""
        return await self._guarded(TxnType.LOTTERY, req, receipt)

    async def inquiry(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Balances for ``req.account``: 65 points, 60 stored value, 00 both. Posts nothing."""
        return await self._guarded(TxnType.INQUIRY, req, receipt)

    async def void(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Undo the whole original named by ``req.original_rrn`` (same terminal, same day)."""
        return await self._guarded(TxnType.VOID, req, receipt)

    async def refund(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Refund ``amount`` of the original named by ``req.original_rrn``; partial allowed."""
        return await self._guarded(TxnType.REFUND, req, receipt)

    async def reverse(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Reverse the original posted under ``req.original_key`` (0400/0420); idempotent."""
        return await self._guarded(TxnType.REVERSAL, req, receipt)

    async def exchange(self, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Exchange ``amount`` points of the merchant's program into ``req.target_program``'s
        (ledger/loyalty/exchange.py)."""
        return await self._guarded(TxnType.EXCHANGE, req, receipt)

    async def execute(self, txn_type: TxnType, req: Request, receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Run the operation for ``txn_type`` (a dispatcher for handlers and tests)."""
        return await self._guarded(txn_type, req, receipt)

    async def decline(self, txn_type: TxnType, req: Request, reason: Reason, detail: str = "",
                      receipt: OutcomeReceiptFn | None = None) -> Outcome:
        """Decline ``req`` for a ``reason`` its channel decided before the operation could run (the
        switch's PIN check), recorded as every decline is: no journal, the reason, the request as
        asked, and its receipt stored with the record. A request answered before gets that answer."""
        return await self._guarded(txn_type, req, receipt, Outcome(reason, txn_type, detail=detail))

    # ------------------------------------------------------------ skeleton

    async def _guarded(self, t: TxnType, req: Request, receipt: OutcomeReceiptFn | None,
                       declined: Outcome | None = None) -> Outcome:
        # Whether a command of this request reached the database: a failure after that is no
        # "nothing was posted" (the caller's own mark when it keeps one, else ours).
        mark = SENT_MARK.get()
        token = SENT_MARK.set([False]) if mark is None else None
        try:
            return await self._run(t, req, receipt, declined)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, Unavailable) as exc:
            if (mark or SENT_MARK.get() or [False])[0]:
                return Outcome(Reason.OUTCOME_UNKNOWN, t, detail=f"database: {first_line(exc)}, after a posting "
                                                                 "was sent: it may have posted")
            return Outcome(Reason.SYSTEM_ERROR, t, detail=f"database: {first_line(exc)}")
        except card_numbers.CardVaultError as exc:  # before anything was sent: nothing posted
            return Outcome(Reason.SYSTEM_ERROR, t, detail=str(exc))
        finally:
            if token is not None:
                SENT_MARK.reset(token)

    async def _run(self, t: TxnType, req: Request, receipt: OutcomeReceiptFn | None,
                   declined: Outcome | None = None) -> Outcome:
        """Run ``req``; ``declined``: the channel's decline of it, recorded unless it was answered before."""
        # A void's or refund's original comes in the same read (its first look; see _compensate).
        original_rrn = (req.original_rrn or None) if t in (TxnType.VOID, TxnType.REFUND) else None
        vault = self._vault or await self._open_vault()
        target = (req.target_program or "") if t is TxnType.EXCHANGE else None
        ctx = await lookup.read_context(self._contexts, vault.lookup_hash(req.pan), req.merchant_id, req.key, req.receipt_key,
                                        original_rrn, target)
        stored = ctx.stored_receipt if req.receipt_key is not None else None
        if stored is not None:  # answered before: the stored answer, or 94 for other content
            return await self._from_receipt(t, req, ctx, stored, ctx.existing, receipt)
        existing = ctx.existing
        if existing is not None:
            return await self._replay(t, req, ctx, *existing, receipt)
        if declined is not None:
            return await self._unposted(t, req, ctx, declined, receipt)
        if t is TxnType.REVERSAL:
            return await self._reverse(req, ctx, receipt)
        problem = self._merchant_problem(ctx) or self._card_problem(ctx)
        if problem is None and t is not TxnType.INQUIRY:
            problem = self._amount_problem(t, req, ctx)
        if problem is not None:
            return await self._unposted(t, req, ctx, Outcome(problem[0], t, detail=problem[1]), receipt)
        if t is TxnType.INQUIRY:
            return await self._inquiry(req, ctx, receipt)
        if t in (TxnType.VOID, TxnType.REFUND):
            return await self._compensate(t, req, ctx, receipt)
        if t is TxnType.PREAUTH:
            return await place(self, req, ctx, receipt)
        if t is TxnType.COMPLETION:
            return await complete(self, req, ctx, receipt)
        if t is TxnType.EXCHANGE:
            return await self._exchange(req, ctx, receipt)
        return await self._purchase_like(t, req, ctx, receipt)

    @staticmethod
    def fingerprint(t: TxnType, req: Request, card_id: int | None) -> str:
        """What identifies a request's content in its journal (a replay with other content is 94)."""
        return _fingerprint(t, req, card_id)

    # ------------------------------------------------------------ checks

    @staticmethod
    def _merchant_problem(ctx: Context) -> tuple[Reason, str] | None:
        if ctx.merchant_id is None:
            return Reason.MERCHANT_UNKNOWN, "unknown merchant"
        if ctx.merchant_status != "active":
            return Reason.MERCHANT_INACTIVE, f"merchant is {ctx.merchant_status}"
        if ctx.program_status != "active":
            return Reason.NOT_PERMITTED, f"program {ctx.program} is {ctx.program_status}"
        return None

    def _card_problem(self, ctx: Context) -> tuple[Reason, str] | None:
        if ctx.card_id is None:
            return Reason.CARD_UNKNOWN, "unknown card"
        if ctx.card_status == "blocked":
            return Reason.CARD_BLOCKED, "card is blocked"
        if ctx.card_status == "expired" or is_expired(ctx.expiry, self._today()):
            return Reason.CARD_EXPIRED, "card has expired"
        return None

    @staticmethod
    def _amount_problem(t: TxnType, req: Request, ctx: Context) -> tuple[Reason, str] | None:
        if not isinstance(req.amount, int) or isinstance(req.amount, bool) or req.amount <= 0:
            return Reason.INVALID_AMOUNT, f"amount must be a positive integer, got {req.amount!r}"
        if t in (TxnType.VOID, TxnType.REFUND):
            return None  # bounded by the original
        if t.in_points:
            if req.amount > ctx.txn_max_points:
                return Reason.EXCEEDS_LIMIT, f"{req.amount} points is above the maximum {ctx.txn_max_points}"
            return None
        if req.currency is not None and req.currency != ctx.currency:
            return Reason.INVALID_TXN, f"currency {req.currency} is not the program's {ctx.currency}"
        if req.amount > ctx.txn_max_minor:
            return Reason.EXCEEDS_LIMIT, f"amount {req.amount} is above the maximum {ctx.txn_max_minor}"
        return None

    # ------------------------------------------------------------ purchase-like (one new journal)

    async def _member_points_account(self, ctx: Context) -> int:
        if ctx.points_account_id is not None:
            return int(ctx.points_account_id)
        return await open_account(self.pool, "card", str(ctx.card_id), ctx.points_asset, "credit", "guarded",
                                  "points")

    async def _member_sv_account(self, ctx: Context) -> int:
        if ctx.sv_account_id is not None:
            return int(ctx.sv_account_id)
        return await open_account(self.pool, "card", str(ctx.card_id), ctx.money_asset, "credit", "guarded",
                                  "stored_value")

    async def _purchase_like(self, t: TxnType, req: Request, ctx: Context,
                             receipt: OutcomeReceiptFn | None) -> Outcome:
        legs: list[Leg] = []
        member: dict[str, int] = {}
        fee = 0
        points = 0  # member points change
        money = 0  # member stored-value change
        prize: dict[str, Any] = {}
        m_pts, m_money = int(ctx.clearing_points_account_id), int(ctx.clearing_money_account_id)
        fees = ctx.fees
        if t is TxnType.EARN:
            points = earned_points(req.amount, ctx.earn_num, ctx.earn_den, ctx.money_scale)
            if points > 0:
                member[ROLE_POINTS] = await self._member_points_account(ctx)
                legs.append(Leg(m_pts, member[ROLE_POINTS], points))
            elif ctx.points_account_id is not None:
                member[ROLE_POINTS] = int(ctx.points_account_id)
            fee = fee_minor(req.amount, fee_bps_for(fees, "earn"))
        elif t is TxnType.TOPUP:
            points = req.amount
            member[ROLE_POINTS] = await self._member_points_account(ctx)
            legs.append(Leg(m_pts, member[ROLE_POINTS], points))
            fee = fee_minor(req.amount * ctx.issue_price_minor, fee_bps_for(fees, "topup"))
        elif t is TxnType.REDEEM:
            if ctx.points_available() < req.amount:
                return await self._unposted(t, req, ctx, Outcome(
                    Reason.INSUFFICIENT, t, detail=f"points available {ctx.points_available()}"), receipt)
            points = -req.amount
            member[ROLE_POINTS] = int(ctx.points_account_id)
            legs.append(Leg(member[ROLE_POINTS], m_pts, req.amount))
            fee = fee_minor(req.amount * ctx.redeem_value_minor, fee_bps_for(fees, "redeem"))
        elif t is TxnType.LOAD:
            money = req.amount
            member[ROLE_SV] = await self._member_sv_account(ctx)
            legs.append(Leg(m_money, member[ROLE_SV], money))
            fee = fee_minor(req.amount, fee_bps_for(fees, "load"))
        elif t is TxnType.SV_PURCHASE:
            if ctx.sv_available() < req.amount:
                return await self._unposted(t, req, ctx, Outcome(
                    Reason.INSUFFICIENT, t, detail=f"stored value available {ctx.sv_available()}"), receipt)
            money = -req.amount
            member[ROLE_SV] = int(ctx.sv_account_id)
            legs.append(Leg(member[ROLE_SV], m_money, req.amount))
            fee = fee_minor(req.amount, fee_bps_for(fees, "sv_purchase"))
        elif t is TxnType.LOTTERY:
            problem = await self._lottery_legs(req, ctx, legs, prize)
            if problem is not None:
                return await self._unposted(t, req, ctx, Outcome(problem[0], t, detail=problem[1]), receipt)
            member[ROLE_POINTS] = int(ctx.points_account_id)
            points = int(prize["prize_points"]) - req.amount
        else:  # pragma: no cover - the dispatcher guarantees the type
            raise AssertionError(t)
        if fee > 0:
            # The fee is money the merchant owes the operator, booked with the transaction.
            legs.append(Leg(m_money, int(ctx.fee_income_account_id), fee))
        if not legs:
            legs = self._memo_legs(ctx)
        txn = self._txn_record(t, req, ctx, points=points, money=money, fee=fee,
                               prize_code=prize.get("prize_code"))
        if t is TxnType.LOTTERY:
            out = {"points_earned": int(prize["prize_points"]), "points_redeemed": req.amount,
                   "prize_code": prize["prize_code"], "prize_points": int(prize["prize_points"])}
        else:
            out = {"points_earned": max(points, 0), "points_redeemed": max(-points, 0)}
            if t is TxnType.EARN and points == 0:
                out["points_balance"] = ctx.points_available()  # answered although untouched
        meta: dict[str, Any] = {"txn": txn, "fp": _fingerprint(t, req, ctx.card_id), "out": out}
        if prize:
            meta["draw"] = prize
        # A command that only credits the member may pass a member below zero after a
        # claw-back (a credit must never be declined); one that debits the member may not.
        force = t in (TxnType.EARN, TxnType.TOPUP, TxnType.LOAD)
        return await self._post(t, req, ctx, legs, meta, member, receipt, force=force)

    async def _exchange(self, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None) -> Outcome:
        """An exchange from a terminal: the merchant's program into ``req.target_program``'s."""
        t = TxnType.EXCHANGE
        available = ctx.points_available()
        terms = ctx.exchange_terms  # read with the context; read again when overtaken
        for attempt in range(exchange.GUARD_ATTEMPTS_MAX):
            if attempt:
                terms = await exchange.read_terms(self.pool, int(ctx.card_id), ctx.program, req.target_program or "",
                                                  ctx.business_date)
            problem = exchange.problem(terms, req.amount, available, self.exchange_settings)
            if problem is not None:
                return await self._unposted(t, req, ctx, Outcome(problem[0], t, detail=problem[1]), receipt)
            source = int(ctx.points_account_id)
            plan = await exchange.plan(self.pool, terms, int(ctx.card_id), source, req.amount, ctx.business_date)
            txn = self._txn_record(t, req, ctx, points=-req.amount)
            txn.update(plan.record)
            # PR: given up in the source program (PG, whose balance is answered); PE: credited in the target.
            out = {"points_earned": plan.net, "points_redeemed": req.amount}
            meta = {"txn": txn, "fp": _fingerprint(t, req, ctx.card_id), "out": out,
                    "exchange": exchange.exchange_meta(terms, req.amount)}
            try:
                return await self._post(t, req, ctx, plan.legs, meta, {ROLE_POINTS: source}, receipt, force=False,
                                        guard=plan.guard)
            except _GuardTaken:
                self.overtaken_total += 1  # another exchange of the card posted: count again
        return Outcome(Reason.SYSTEM_ERROR, t, detail="the card's exchanges kept changing")

    async def _lottery_legs(self, req: Request, ctx: Context, legs: list[Leg],
                            prize: dict[str, Any]) -> tuple[Reason, str] | None:
        price = ctx.lottery_price_points
        if price is None:
            return Reason.NOT_PERMITTED, f"program {ctx.program} has no lottery"
        if req.amount != price:
            return Reason.INVALID_AMOUNT, f"the stake must be the draw price {price}, got {req.amount}"
        # Pre-check here; the ledger re-checks the final balance atomically.
        if ctx.points_available() < req.amount:
            return Reason.INSUFFICIENT, f"points available {ctx.points_available()}"
        table = await lookup.prizes(self.pool, ctx.program)
        if not table:
            return Reason.NOT_PERMITTED, f"program {ctx.program} has no prize table"
        total = sum(w for _, _, w in table)
        draw = secrets.randbelow(total)
        code, prize_points = table[-1][0], table[-1][1]
        acc = 0
        for c, p, w in table:
            acc += w
            if draw < acc:
                code, prize_points = c, p
                break
        prize.update(random=draw, total_weight=total, prize_code=code, prize_points=prize_points)
        member = int(ctx.points_account_id)
        pool = int(ctx.prize_pool_account_id)
        legs.append(Leg(member, pool, req.amount))
        if prize_points > 0:
            legs.append(Leg(pool, member, prize_points))
        return None

    @staticmethod
    def _memo_legs(ctx: Context, amount: int = MEMO_UNITS) -> list[Leg]:
        # A journal that must exist but moves nothing: there and back between two memo accounts.
        a, b = int(ctx.memo_a_account_id), int(ctx.memo_b_account_id)
        return [Leg(a, b, amount), Leg(b, a, amount)]

    @staticmethod
    def _txn_record(t: TxnType, req: Request, ctx: Context, *, points: int = 0, money: int = 0, fee: int = 0,
                    prize_code: str | None = None, card_id: int | None = None, program: str | None = None,
                    original: int | None = None, undo_units: int | None = None,
                    undo_legs: list[int] | None = None, reason: str | None = None) -> dict[str, Any]:
        txn: dict[str, Any] = {
            "type": str(t), "rrn": req.rrn or None, "stan": req.stan or None, "terminal_id": req.terminal_id,
            "merchant_id": req.merchant_id, "card_id": card_id if card_id is not None else ctx.card_id,
            "program": program if program is not None else ctx.program, "amount": req.amount,
            "currency": req.currency or (None if t.in_points else ctx.currency),
            "points_delta": points, "money_delta_minor": money, "fee_minor": fee,
        }
        if prize_code is not None:
            txn["prize_code"] = prize_code
        if original is not None:
            txn["original_journal_id"] = original
        if undo_units is not None:
            txn["undo_units"] = undo_units
            txn["undo_legs"] = undo_legs or []
        if reason is not None:
            txn["reason"] = reason
        # Only off the wire: the terminal is the default (migration 0013), and the wire's
        # journals stay as small as they were.
        if req.channel != Channel.TERMINAL:
            txn["channel"] = req.channel
        if req.operator_ref is not None:
            txn["operator_ref"] = req.operator_ref
        return txn

    # ------------------------------------------------------------ posting and outcomes

    async def _post(self, t: TxnType, req: Request, ctx: Context, legs: list[Leg], meta: dict[str, Any],
                    member: dict[str, int], receipt: OutcomeReceiptFn | None, force: bool,
                    guard: str | None = None, command: Command | None = None) -> Outcome:
        """Post one transfer (or ``command``: a pre-authorisation's hold, capture or release, under
        the request's key); map the ledger's answer to an outcome (and the receipt, in-transaction).

        Raises _GuardTaken when ``guard`` was taken (nothing posted; the caller reads again)."""
        cmd = command if command is not None else transfer(req.key, legs, metadata=meta, force=force, guard=guard)

        # A caller that keys its receipts (the switch) gets them stored by reference: the journal
        # records everything its answer is rebuilt from (see _replay), and the posting stays
        # one statement. Otherwise the receipt is built from the result, in the transaction.
        ref = (ReceiptRef(req.receipt_key, req.receipt_hash)
               if receipt is not None and req.receipt_key is not None and req.receipt_hash is not None else None)

        # Partials, not nested functions: a nested function that another one calls can keep its
        # enclosing frame's cells alive in a reference cycle, one per request for the cycle
        # collector (tests/test_loyalty_ops.py and tests/test_cycles_e2e.py check there is none).
        ledger_receipt = (functools.partial(_receipt_of_result, receipt, t, ctx, meta, member)
                          if receipt is not None and ref is None else None)
        res = await self.ledger.post(cmd, receipt=ledger_receipt, receipt_ref=ref)
        if res.status is Status.POSTED:
            return _outcome_from_result(t, ctx, meta, member, res, receipt_stored=ref is not None)
        if res.status is Status.EXISTS:
            # An identical request posted it a moment ago (with its receipt, if it kept one):
            # answer exactly as a retransmission is answered, from the journal (its RRN, not ours).
            found = await lookup.journal_by_key(self.pool, req.key)
            if found is None:  # pragma: no cover - journals are never deleted
                return Outcome(Reason.SYSTEM_ERROR, t, detail="posted journal not found")
            return _replace(await self._replay(t, req, ctx, *found, receipt), receipt_stored=ref is not None)
        if res.status is Status.CONFLICT and res.reason == "guard":
            raise _GuardTaken(res.detail)
        if res.status is Status.CONFLICT:
            found = await lookup.journal_by_key(self.pool, req.key)
            if found is not None:
                return await self._replay(t, req, ctx, *found, receipt)
            return Outcome(Reason.SYSTEM_ERROR, t, detail=res.detail or "conflict")
        if res.status is Status.DECLINED:
            detail = res.detail or ""
            reason = Reason.INSUFFICIENT if res.reason == "limit" else Reason.NOT_PERMITTED
            return await self._unposted(t, req, ctx, Outcome(reason, t, detail=detail), receipt)
        return _ledger_failure(t, res)

    async def _decline(self, t: TxnType, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None,
                       reason: Reason, detail: str, original: int | None = None) -> Outcome:
        """A decline that posted nothing, recorded with its receipt (see _unposted)."""
        return await self._unposted(t, req, ctx, Outcome(reason, t, detail=detail), receipt, original)

    async def _unposted(self, t: TxnType, req: Request, ctx: Context, outcome: Outcome,
                        receipt: OutcomeReceiptFn | None, original: int | None = None) -> Outcome:
        """Record an outcome that posted nothing (declines, inquiries) and store its receipt, together."""
        if outcome.reason in (Reason.SYSTEM_ERROR, Reason.OUTCOME_UNKNOWN):
            return outcome
        outcome = _replace(outcome, business_date=ctx.business_date.isoformat(),
                           program=outcome.program or ctx.program)
        rec = receipt(outcome) if receipt is not None else None
        args = (req.key, ctx.business_date, str(t), str(outcome.reason), req.rrn or None, req.stan or None,
                req.terminal_id, req.merchant_id, ctx.card_id, ctx.program,
                req.amount if isinstance(req.amount, int) else 0, req.currency, original,
                rec.idempotency_key if rec is not None else None, rec.content_hash if rec is not None else None,
                rec.payload if rec is not None else None, req.channel, req.operator_ref)
        # With the other requests' records of this moment, in one statement.
        row = await self._unposted_records.fetch(*args)
        if row is not None and not row["recorded"] and rec is not None:
            return await self._answered_before(t, req, ctx, receipt)
        return outcome

    async def _answered_before(self, t: TxnType, req: Request, ctx: Context,
                               receipt: OutcomeReceiptFn | None) -> Outcome:
        """The answer stored under the request's receipt key by an identical request that got there
        first (they raced: both read their context before either's answer was stored)."""
        stored = await get_receipt(self.pool, req.receipt_key or "")
        if stored is None:  # pragma: no cover - receipts are never deleted
            return Outcome(Reason.SYSTEM_ERROR, t, detail="receipt vanished")
        journal = await lookup.journal_by_key(self.pool, req.key) if stored[1] is None else None
        return await self._from_receipt(t, req, ctx, stored, journal, receipt)

    async def _from_receipt(self, t: TxnType, req: Request, ctx: Context, stored: StoredReceipt,
                            journal: tuple[int, dict[str, Any]] | None,
                            receipt: OutcomeReceiptFn | None) -> Outcome:
        """The answer to a request whose receipt key holds ``stored`` (content hash, payload):
        94 for other content; else the stored answer, or for a receipt stored by reference
        the journal posted under the request's key, replayed."""
        if stored[0] != req.receipt_hash:
            return Outcome(Reason.DUPLICATE_MISMATCH, t, detail="duplicate key, different content")
        if stored[1] is not None:
            return Outcome(Reason.APPROVED, t, replayed=True, stored_answer=stored[1])
        if journal is None:
            return Outcome(Reason.SYSTEM_ERROR, t, detail="a receipt names a journal not under this key")
        return _replace(await self._replay(t, req, ctx, *journal, receipt), receipt_stored=True)

    async def _replay(self, t: TxnType, req: Request, ctx: Context, journal_id: int, meta: dict[str, Any],
                      receipt: OutcomeReceiptFn | None) -> Outcome:
        """The answer for a key that has posted before: the same outcome, or why not."""
        txn = meta.get("txn", {})
        if txn.get("type") == TxnType.MARKER:
            return await self._unposted(t, req, ctx, Outcome(
                Reason.ORIGINAL_REVERSED, t, detail="a reversal of this request came first"), receipt)
        if meta.get("fp") != _fingerprint(t, req, ctx.card_id):
            return Outcome(Reason.DUPLICATE_MISMATCH, t, detail="key used before with different content")
        rows = await self.pool.fetch(
            "SELECT a.owner_kind || ':' || a.purpose AS role, e.balance_after, a.asset FROM ledger.entries e "
            "JOIN ledger.accounts a ON a.id = e.account_id WHERE e.journal_id=$1 ORDER BY e.leg", journal_id)
        # The member's points in the transaction's own program: an exchange also credits another's.
        own = f"PTS:{txn.get('program')}"
        balances = {r["role"]: int(r["balance_after"]) for r in rows
                    if r["role"] != ROLE_POINTS or r["asset"] == own}
        out = meta.get("out", {})
        bdate = await self.pool.fetchval("SELECT business_date FROM ledger.journals WHERE id=$1", journal_id)
        return Outcome(
            Reason(txn.get("reason", Reason.APPROVED)), t, detail="replayed", journal_id=journal_id,
            approval_code=approval_code(journal_id), business_date=bdate.isoformat(), program=txn.get("program"),
            currency=ctx.currency, points_earned=int(out.get("points_earned", 0)),
            points_redeemed=int(out.get("points_redeemed", 0)),
            points_balance=balances.get(ROLE_POINTS, out.get("points_balance")),
            sv_balance_minor=balances.get(ROLE_SV),
            prize_code=out.get("prize_code"), prize_points=int(out.get("prize_points", 0)), replayed=True,
            rrn=txn.get("rrn"), hold_s=out.get("hold_s"))

    async def _inquiry(self, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None) -> Outcome:
        want_points = req.account in ("65", "00")
        want_sv = req.account in ("60", "00")
        if not (want_points or want_sv):
            return await self._unposted(TxnType.INQUIRY, req, ctx, Outcome(
                Reason.INVALID_TXN, TxnType.INQUIRY, detail=f"account type {req.account!r}"), receipt)
        outcome = Outcome(
            Reason.APPROVED, TxnType.INQUIRY, program=ctx.program, currency=ctx.currency,
            points_balance=ctx.points_available() if want_points else None,
            sv_balance_minor=ctx.sv_available() if want_sv else None)
        if want_points and ctx.points_expiry_months is not None and ctx.points_account_id is not None:
            # Only a program with expiry pays this read, and only for an inquiry.
            nxt = (await lots.next_expiring(self.pool, [int(ctx.points_account_id)])).get(int(ctx.points_account_id))
            if nxt is not None:
                outcome.points_expiring, outcome.points_expiring_on = nxt.points, nxt.expires_on
        return await self._unposted(TxnType.INQUIRY, req, ctx, outcome, receipt)

    # ------------------------------------------------------------ void and refund

    async def _lock_original(self, root: int) -> bool:
        """Take ``root``'s lock in this process: one void, refund or reversal of ``root`` at a
        time, the others waiting (bounded). Returns whether this one had to wait, in which case
        what it read before may be stale. Across processes the guards decide (see ``_undo``).
        Each call that returns is paired with one ``_unlock_original``."""
        local = self._local_locks.setdefault(root, asyncio.Lock())
        self._local_waiters[root] = self._local_waiters.get(root, 0) + 1
        try:
            waited = local.locked()
            with timeout_named(f"original {root} busy: waited {self.lock_timeout_s * 4:g}s "
                               "for its other voids, refunds or reversals"):
                async with asyncio.timeout(self.lock_timeout_s * 4):
                    await local.acquire()
        except BaseException:
            self._leave_lock(root)
            raise
        return waited

    def _unlock_original(self, root: int) -> None:
        self._local_locks[root].release()
        self._leave_lock(root)

    def _leave_lock(self, root: int) -> None:
        self._local_waiters[root] -= 1
        if self._local_waiters[root] == 0:
            del self._local_waiters[root]
            del self._local_locks[root]

    async def _on_standing(self, t: TxnType, root: int, first: lookup.Standing | None,
                           read: Callable[[], Awaitable[lookup.Standing]],
                           decide: Callable[[lookup.Standing], Awaitable[Outcome]]) -> Outcome:
        """``decide`` on what stands against ``root``'s family, one compensation of ``root`` at
        a time in this process; and again on a fresh ``read`` each time its guard was taken
        (another compensation of ``root`` posted in between), at most GUARD_ATTEMPTS_MAX times
        and within the bound of the wait for the in-process lock. ``first``: a standing read
        already, used unless this one had to wait for the lock (it may be stale then)."""
        loop = asyncio.get_running_loop()
        waited = await self._lock_original(root)
        try:
            deadline_s = loop.time() + self.lock_timeout_s * 4
            standing = None if waited else first
            for attempt in range(1, GUARD_ATTEMPTS_MAX + 1):
                if standing is None:
                    standing = await read()
                try:
                    return await decide(standing)
                except _GuardTaken:
                    pass  # overtaken: decided again below
                self.overtaken_total += 1
                if attempt == GUARD_ATTEMPTS_MAX or loop.time() >= deadline_s:
                    return Outcome(Reason.SYSTEM_ERROR, t, detail=f"original {root} kept changing: "
                                   f"{attempt} decisions overtaken by other compensations of it")
                standing = None
                # Jitter, not a secret: random is fine here.
                await asyncio.sleep(random.uniform(0, GUARD_PAUSE_MAX_S))  # noqa: S311
        finally:
            self._unlock_original(root)
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    async def _compensate(self, t: TxnType, req: Request, ctx: Context,
                          receipt: OutcomeReceiptFn | None) -> Outcome:
        # A partial, not a nested function (see _post).
        decline = functools.partial(self._decline, t, req, ctx, receipt)
        if not req.original_rrn:
            return await decline(Reason.ORIGINAL_NOT_FOUND, "no original RRN")
        found = ctx.original  # read with the context, with what stands against it
        if found is None:
            return await decline(Reason.ORIGINAL_NOT_FOUND, f"no approved transaction with RRN {req.original_rrn}")
        orig, in_closed_batch = found
        otype = TxnType(orig.txn_type)
        jid = orig.journal_id
        if orig.idempotency_key.startswith("mall:") and req.channel != Channel.MALL:
            # A mall order's capture: undone only through its order (ledger/loyalty/mall.py), which
            # keeps what was refunded and gives the stock back.
            return await decline(Reason.INVALID_TXN, "a mall order is refunded or cancelled from the order", jid)
        allowed = VOIDABLE if t is TxnType.VOID else REFUNDABLE
        if otype not in allowed:
            return await decline(Reason.INVALID_TXN, f"a {otype} cannot be {'voided' if t is TxnType.VOID else 'refunded'}", jid)
        if otype.account != req.account:
            return await decline(Reason.INVALID_TXN, f"account type {req.account} but the original is {otype.account}", jid)
        if orig.card_id != ctx.card_id:
            return await decline(Reason.INVALID_TXN, "the card is not the original's", jid)
        if orig.merchant_id != req.merchant_id:
            return await decline(Reason.INVALID_TXN, "the merchant is not the original's", jid)
        if t is TxnType.VOID:
            if orig.terminal_id != req.terminal_id:
                return await decline(Reason.INVALID_TXN, "a void must come from the original's terminal", jid)
            if orig.business_date != ctx.business_date:
                return await decline(Reason.INVALID_TXN, "a void must be on the original's business day", jid)
            # A terminal that closed its batch (0500 in balance) has settled it: nothing in it
            # can be voided any more; a refund is the way back.
            if in_closed_batch:
                return await decline(Reason.INVALID_TXN, "the original's terminal batch is closed", jid)
            if req.amount != orig.amount:
                return await decline(Reason.INVALID_AMOUNT, f"a void is for the full {orig.amount}", jid)
        return await self._on_standing(t, jid, ctx.standing, functools.partial(lookup.standing, self.pool, jid, jid),
                                       functools.partial(self._refund_or_void_on, t, req, ctx, receipt, orig))

    async def _refund_or_void_on(self, t: TxnType, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None,
                                 orig: Original, standing: lookup.Standing) -> Outcome:
        """Void or refund ``orig`` as ``standing`` says it stands (see _on_standing)."""
        comps, legs, version = standing
        jid = orig.journal_id
        undone = sum(c.undo_units for c in comps)
        problem: tuple[Reason, str] | None = None
        if t is TxnType.VOID and comps:
            problem = Reason.INVALID_TXN, "already voided, refunded or reversed"
        elif (t is TxnType.REFUND and any(c.txn_type in ("void", "reversal") for c in comps)
              and undone >= orig.amount):
            problem = Reason.INVALID_TXN, "the original was voided or reversed"
        after = orig.amount if t is TxnType.VOID else undone + req.amount
        if problem is None and after > orig.amount:
            problem = Reason.EXCEEDS_LIMIT, f"refunds would total {after}, above the original {orig.amount}"
        if problem is not None:
            return await self._unposted(t, req, ctx, Outcome(problem[0], t, detail=problem[1]), receipt, jid)
        # Claw-backs (undoing points the member earned) may take the member below zero, and
        # credits back to the member are never refused; undoing a top-up or load may not
        # take the member below zero: the member must still have what is taken back.
        force = TxnType(orig.txn_type) not in (TxnType.TOPUP, TxnType.LOAD, TxnType.EXCHANGE)
        return await self._undo(t, req, ctx, orig, comps, after, force, receipt, orig_legs=legs,
                                guard=_guard(jid, version))

    async def _undo(self, t: TxnType, req: Request, ctx: Context, orig: Original,
                    comps: list[lookup.Compensation], after: int, force: bool,
                    receipt: OutcomeReceiptFn | None, *, whole: bool = False,
                    orig_legs: list[PostedLeg], guard: str) -> Outcome:
        """Post the compensation that brings ``orig`` to ``after`` units undone.

        ``whole``: undo every leg of ``orig`` as it stands (reversing a void or refund).
        ``orig_legs``: ``orig``'s legs; ``comps``: what stood against it when they were read;
        ``guard``: the guard for that standing (raises _GuardTaken when it has changed).
        """
        amounts = [leg.amount for leg in orig_legs]
        so_far = [0] * len(amounts)
        for c in comps:
            for i, v in enumerate(c.undo_legs[: len(amounts)]):
                so_far[i] += v
        targets = amounts if whole else undo_targets(amounts, orig.amount, after)
        delta = [max(tg - s, 0) for tg, s in zip(targets, so_far, strict=True)]
        legs: list[Leg] = []
        member: dict[str, int] = {}
        points = money = fee = 0
        # An exchange's first leg is the source program's, its second the target's: the
        # record's points (and the answered balance) are the source's.
        is_exchange = orig.txn_type == TxnType.EXCHANGE
        for pl, d in zip(orig_legs, delta, strict=True):
            for acc, role in ((pl.debit_account_id, pl.debit_role), (pl.credit_account_id, pl.credit_role)):
                if role in (ROLE_POINTS, ROLE_SV) and not (is_exchange and role in member):
                    member[role] = acc
            if d <= 0:
                continue
            legs.append(Leg(pl.credit_account_id, pl.debit_account_id, d))  # the sides swap
            points += d * _role_sign(pl, ROLE_POINTS)
            money += d * _role_sign(pl, ROLE_SV)
            fee += d * _role_sign(pl, ROLE_FEE)
        if not legs:
            # Rounding left nothing to move, but the undo stands on the record (a memo journal),
            # so that units undone add up and a reversal happens once.
            legs = self._memo_legs(await self._memo_context(ctx))
        if is_exchange:
            points = delta[0]
        txn = self._txn_record(
            t, req, ctx, points=points, money=money, fee=fee, card_id=orig.card_id, program=orig.program,
            original=orig.journal_id,
            undo_units=None if whole else after - sum(c.undo_units for c in comps),
            undo_legs=None if whole else delta)
        if is_exchange:
            txn.update(await self._exchange_undone(orig.journal_id, -delta[1]))
        out = {"points_earned": max(points, 0), "points_redeemed": max(-points, 0)}
        meta = {"txn": txn, "fp": _fingerprint(t, req, ctx.card_id), "out": out}
        return await self._post(t, req, ctx, legs, meta, member, receipt, force=force, guard=guard)

    # ------------------------------------------------------------ reversal

    async def _reverse(self, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None) -> Outcome:
        t = TxnType.REVERSAL
        if not req.original_key:
            return await self._unposted(t, req, ctx, Outcome(
                Reason.ORIGINAL_NOT_FOUND, t, detail="no original key"), receipt)
        for _attempt in range(3):
            found = await lookup.journal_by_key(self.pool, req.original_key)
            if found is None:
                declined = await lookup.unposted_by_key(self.pool, req.original_key)
                if declined is not None:
                    return await self._unposted(t, req, ctx, Outcome(
                        Reason.APPROVED, t, detail=f"the original posted nothing ({declined})"), receipt)
                marked = await self._mark(req, ctx, receipt)
                if marked is not None:
                    return marked
                continue  # the original (or another marker) arrived meanwhile: look again
            jid, meta = found
            ttype = meta.get("txn", {}).get("type")
            if ttype == TxnType.PREAUTH:  # a pre-authorisation: its hold is released
                return await release(self, req, ctx, receipt, jid, meta["txn"])
            if ttype == TxnType.MARKER:
                return await self._unposted(t, req, ctx, Outcome(
                    Reason.ORIGINAL_NOT_FOUND, t, detail="original not found (marked)"), receipt)
            orig = await lookup.original_by_journal(self.pool, jid)
            if orig is None or ttype == TxnType.REVERSAL:
                return await self._unposted(t, req, ctx, Outcome(
                    Reason.INVALID_TXN, t, detail="a reversal cannot be reversed"), receipt)
            root = orig.original_journal_id if ttype in (TxnType.VOID, TxnType.REFUND) else jid
            assert root is not None
            # Serialised (and guarded) by the root original, as its voids and refunds are; what
            # stands against the journal reversed (``jid``) is read with the root's family version.
            return await self._on_standing(t, root, None, functools.partial(lookup.standing, self.pool, jid, root),
                                           functools.partial(self._reverse_on, req, ctx, receipt, orig, ttype, jid,
                                                             root))
        return Outcome(Reason.SYSTEM_ERROR, t,
                       detail="original not found and not marked: something kept posting under its key")

    async def _reverse_on(self, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None, orig: Original,
                          ttype: str, jid: int, root: int, standing: lookup.Standing) -> Outcome:
        """Reverse journal ``jid`` (``orig`` as recorded; of type ``ttype``, compensating
        ``root`` or being it) as ``standing`` says it stands (see _on_standing)."""
        t = TxnType.REVERSAL
        comps, legs, version = standing
        # A reversal is never itself reversed, so it stands among jid's compensations.
        if any(c.txn_type == TxnType.REVERSAL for c in comps):
            return await self._unposted(t, req, ctx, Outcome(Reason.APPROVED, t, detail="already reversed"),
                                        receipt, jid)
        if ttype in (TxnType.VOID, TxnType.REFUND):
            # Undo a compensation entirely: the original stands again by as much.
            return await self._undo(t, req, ctx, orig, [], 0, True, receipt, whole=True, orig_legs=legs,
                                    guard=_guard(root, version))
        undone = sum(c.undo_units for c in comps)
        if req.replacement_amount is not None and 0 <= req.replacement_amount < orig.amount:
            after = min(orig.amount, undone + orig.amount - req.replacement_amount)
        else:
            after = orig.amount
        if after <= undone:
            return await self._unposted(t, req, ctx, Outcome(Reason.APPROVED, t, detail="nothing left to reverse"),
                                        receipt, jid)
        return await self._undo(t, req, ctx, orig, comps, after, True, receipt, orig_legs=legs,
                                guard=_guard(root, version))

    async def _exchange_undone(self, journal_id: int, target_points: int) -> dict[str, Any]:
        """The exchange columns of a record undoing exchange ``journal_id`` (``target_points`` taken back)."""
        row = await self.pool.fetchrow("SELECT target_program, rate_num, rate_den, rate_fee_bps "
                                       "FROM loyalty.transactions WHERE journal_id = $1", journal_id)
        assert row is not None
        return {"target_program": row["target_program"], "target_points_delta": target_points,
                "rate_num": row["rate_num"], "rate_den": row["rate_den"], "rate_fee_bps": row["rate_fee_bps"]}

    async def _mark(self, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None) -> Outcome | None:
        """Post a marker under the unknown original's key, so that a late original is declined.

        Returns None when something already stands under that key (the original
        arrived meanwhile, or an earlier marker): the caller looks again.
        """
        t = TxnType.REVERSAL
        assert req.original_key is not None
        unprovisioned: str | None = None
        try:
            memo = await self._memo_context(ctx)
        except ProvisioningError as exc:
            unprovisioned = str(exc)
        if unprovisioned is not None:
            # No currency, so no merchant: no original can have posted, and none can post before
            # the platform is provisioned. Nothing to mark; the terminal is told "not found".
            return await self._unposted(t, req, ctx, Outcome(
                Reason.ORIGINAL_NOT_FOUND, t, detail=f"original not found; not marked: {unprovisioned}"), receipt)
        txn = self._txn_record(TxnType.MARKER, req, ctx, reason=str(Reason.ORIGINAL_NOT_FOUND))
        meta = {"txn": txn, "fp": "marker", "out": {}, "marker_for": req.key}
        outcome = Outcome(Reason.ORIGINAL_NOT_FOUND, t, detail="original not found; marked",
                          business_date=ctx.business_date.isoformat())

        # Guarded by the reversal's own key: two reversals under one key that name different
        # unknown originals would otherwise both post a marker (under two original keys), and the
        # second's stored answer would be dropped (its receipt key is taken): one marker per
        # reversal key; the other is answered from the first's receipt (94 for other content).
        cmd = transfer(req.original_key, self._memo_legs(memo, MARKER_UNITS), metadata=meta,
                       guard=f"mark:{req.key}")
        res = await self.ledger.post(
            cmd, receipt=functools.partial(_receipt_if_posted, receipt, outcome) if receipt is not None else None)
        if res.status is Status.POSTED:
            return outcome
        if res.status is Status.CONFLICT and res.reason == "guard":
            if req.receipt_key is not None:
                return await self._answered_before(t, req, ctx, receipt)
            return Outcome(Reason.DUPLICATE_MISMATCH, t, detail="another reversal under this key marked its original")
        if res.status in (Status.EXISTS, Status.CONFLICT):
            return None
        return _ledger_failure(t, res)

    async def _memo_context(self, ctx: Context) -> Context:
        """The context itself when it knows memo accounts, else the first currency's (unknown merchant)."""
        if ctx.memo_a_account_id is not None:
            return ctx
        row = await self.pool.fetchrow(
            "SELECT c.memo_a_account_id, c.memo_b_account_id FROM loyalty.currencies c "
            "ORDER BY c.numeric_code LIMIT 1")
        if row is None:
            raise ProvisioningError("no currency is configured")
        return Context(row)


# ---------------------------------------------------------------- helpers


def _ledger_failure(t: TxnType, res: Result) -> Outcome:
    """The outcome of a command the ledger neither posted nor declined: nothing posted, or (reason
    "unknown") sent and not known."""
    if res.reason == LEDGER_UNKNOWN:
        return Outcome(Reason.OUTCOME_UNKNOWN, t, detail=f"ledger: {res.detail}")
    return Outcome(Reason.SYSTEM_ERROR, t, detail=f"ledger {res.status}: {res.detail}")


def _fingerprint(t: TxnType, req: Request, card_id: int | None) -> str:
    # The card's id, never its PAN: this hash is kept in journal metadata for ever,
    # and an unkeyed hash of a PAN whose BIN and last digits are known is a PAN.
    body = "|".join(str(x) for x in (t, card_id, req.amount, req.currency, req.merchant_id, req.terminal_id,
                                     req.account, req.original_rrn, req.original_key, req.replacement_amount))
    if t is TxnType.PREAUTH:  # (appended, so that every other type's fingerprints stay as recorded)
        body += f"|{req.hold_timeout_s}"
    if req.target_program is not None:  # only then: other transactions' fingerprints stay as they were
        body += f"|{req.target_program}"
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def _role_sign(leg: PostedLeg, role: str) -> int:
    """+1 when undoing ``leg`` credits an account of ``role``, -1 when it debits one, else 0."""
    if leg.debit_role == role:
        return 1  # the original debited it; the compensation credits it
    if leg.credit_role == role:
        return -1
    return 0


def _receipt_of_result(receipt: OutcomeReceiptFn, t: TxnType, ctx: Context, meta: dict[str, Any],
                       member: dict[str, int], res: Result) -> Receipt | None:
    """The receipt of a posting, built in its transaction from the ledger's result (see _post)."""
    if res.status is not Status.POSTED:
        return None
    return receipt(_outcome_from_result(t, ctx, meta, member, res))


def _receipt_if_posted(receipt: OutcomeReceiptFn, outcome: Outcome, res: Result) -> Receipt | None:
    return receipt(outcome) if res.status is Status.POSTED else None


def _outcome_from_result(t: TxnType, ctx: Context, meta: dict[str, Any], member: dict[str, int],
                         res: Result, receipt_stored: bool = False) -> Outcome:
    out = meta.get("out", {})
    txn = meta.get("txn", {})
    pts_acc, sv_acc = member.get(ROLE_POINTS), member.get(ROLE_SV)
    points_balance = res.balances.get(pts_acc) if pts_acc is not None else None
    sv_balance = res.balances.get(sv_acc) if sv_acc is not None else None
    if t is TxnType.EARN and points_balance is None:
        # Earned nothing this time: the balance is still worth answering with (field 54).
        points_balance = ctx.points_available()
    jid = res.journal_id
    return Outcome(
        Reason.APPROVED, t, journal_id=jid, approval_code=approval_code(jid) if jid else None,
        business_date=res.business_date, program=txn.get("program"), currency=ctx.row.get("currency"),
        points_earned=int(out.get("points_earned", 0)), points_redeemed=int(out.get("points_redeemed", 0)),
        points_balance=points_balance, sv_balance_minor=sv_balance, prize_code=out.get("prize_code"),
        prize_points=int(out.get("prize_points", 0)), receipt_stored=receipt_stored, hold_s=out.get("hold_s"))


def _replace(outcome: Outcome, **changes: Any) -> Outcome:
    return dataclasses.replace(outcome, **changes)

"""Stored-value pre-authorisation: a hold placed, then captured (in part), released or expired.

The wire's 0100 (specs/HOST-INTERFACE.md §6.1) becomes :func:`place`: a ledger HOLD
of the amount, from the member's stored value to the merchant's money clearing
account, posted under the request's own key and recorded as a loyalty transaction
of type ``preauth`` that moves no money. Its completion (:func:`complete`: a 0200
or 0220 naming the 0100 in field 90) is a ledger CAPTURE of up to the held amount
with the merchant's stored-value purchase fee in the same journal; the rest of the
hold is released. The capture is recorded as the stored-value purchase it is
(``sv_purchase``), so clearing, the 0500 totals, voids, refunds, reversals,
reconciliation and the export count it as one. A reversal of the 0100
(:func:`release`) voids the hold; a hold nobody completes expires (the daemon's
sweep, ``Ledger.expire_due_holds``). Holds move no money: only a capture does.

Rules (each decline posts nothing and leaves the hold as it was):

- a completion above the held amount is declined ``invalid_amount`` (13): the
  terminal asks for what was authorised, or authorises again;
- a completion of a hold captured, released or expired is ``invalid_txn`` (12); of
  an unknown 0100, ``original_not_found`` (25);
- a reversal of a completed pre-authorisation is ``invalid_txn`` (12): the
  completion is what is reversed; of a released or expired one, approved (nothing
  is left to release).

>>> hold_timeout(None, PreauthSettings(3600, 86400)), hold_timeout(10**9, PreauthSettings(3600, 86400))
(3600, 86400)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ledger.commands import Leg, capture, hold, void
from ledger.loyalty import lookup
from ledger.loyalty.lookup import Context
from ledger.loyalty.outcomes import Outcome, OutcomeReceiptFn, Reason, Request, TxnType
from ledger.loyalty.rules import fee_bps_for, fee_minor

if TYPE_CHECKING:
    from ledger.loyalty.operations import Loyalty

ROLE_SV = "card:stored_value"


@dataclass(frozen=True)
class PreauthSettings:
    """The ``[preauth]`` section of the configuration (switch/config.py holds the defaults)."""

    hold_timeout_default_s: int  # a hold's life when the 0100 asks for none
    hold_timeout_max_s: int  # the longest a 0100 may ask for (at most ledger.hold_timeout_max_s)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PreauthSettings:
        """The settings from a mapping with an entry for each of them (others are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


# The schema's defaults (switch/config.py), for callers built without a configuration (tests):
# tests/test_preauth_wire.py checks that they are the schema's.
DEFAULT_SETTINGS = PreauthSettings(hold_timeout_default_s=3_600, hold_timeout_max_s=86_400)

_HOLD_SQL = """
SELECT h.state, h.amount, h.expires_at <= now() AS due FROM ledger.holds h WHERE h.id = $1
"""


def hold_timeout(requested_s: int | None, settings: PreauthSettings) -> int:
    """The hold's life: the one asked for (the default when none), at most the maximum."""
    wanted = settings.hold_timeout_default_s if requested_s is None or requested_s <= 0 else requested_s
    return min(wanted, settings.hold_timeout_max_s)


async def _hold(ops: Loyalty, hold_id: int) -> tuple[str, int, bool]:
    """(state, amount, due) of a hold."""
    row = await ops.pool.fetchrow(_HOLD_SQL, hold_id)
    assert row is not None, f"hold {hold_id} vanished"
    return str(row["state"]), int(row["amount"]), bool(row["due"])


async def place(ops: Loyalty, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None) -> Outcome:
    """Hold ``req.amount`` of the member's stored value for the merchant (a 0100)."""
    t = TxnType.PREAUTH
    if ctx.sv_account_id is None or ctx.sv_available() < req.amount:
        available = 0 if ctx.sv_account_id is None else ctx.sv_available()
        return await ops._decline(t, req, ctx, receipt, Reason.INSUFFICIENT, f"stored value available {available}")
    timeout_s = hold_timeout(req.hold_timeout_s, ops.preauth)
    member = {ROLE_SV: int(ctx.sv_account_id)}
    txn = ops._txn_record(t, req, ctx)
    meta: dict[str, Any] = {"txn": txn, "fp": ops.fingerprint(t, req, ctx.card_id), "out": {"hold_s": timeout_s}}
    cmd = hold(req.key, Leg(member[ROLE_SV], int(ctx.clearing_money_account_id), req.amount), timeout_s,
               metadata=meta)
    return await ops._post(t, req, ctx, [], meta, member, receipt, force=False, command=cmd)


async def _preauth_of(ops: Loyalty, req: Request) -> tuple[int, dict[str, Any]] | None:
    """(hold journal, its transaction record) of the 0100 a completion names, or None."""
    if not req.original_key:
        return None
    found = await lookup.journal_by_key(ops.pool, req.original_key)
    if found is None:
        return None
    jid, meta = found
    txn = meta.get("txn", {})
    return (jid, txn) if txn.get("type") == TxnType.PREAUTH else None


async def complete(ops: Loyalty, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None) -> Outcome:
    """Capture ``req.amount`` (at most the held amount) of the pre-authorisation named by
    ``req.original_key``, with the stored-value purchase fee; the rest of the hold is released."""
    t = TxnType.COMPLETION
    found = await _preauth_of(ops, req)
    if found is None:
        return await ops._decline(t, req, ctx, receipt, Reason.ORIGINAL_NOT_FOUND, "no pre-authorisation under 90")
    jid, txn = found
    if txn.get("card_id") != ctx.card_id or txn.get("merchant_id") != req.merchant_id:
        return await ops._decline(t, req, ctx, receipt, Reason.INVALID_TXN,
                                  "the card or merchant is not the pre-authorisation's", jid)
    state, held, due = await _hold(ops, jid)
    problem = _completion_problem(state, held, due, req.amount)
    if problem is not None:
        return await ops._decline(t, req, ctx, receipt, problem[0], problem[1], jid)
    fee = fee_minor(req.amount, fee_bps_for(ctx.fees, "sv_purchase"))
    m_money = int(ctx.clearing_money_account_id)
    legs = [Leg(m_money, int(ctx.fee_income_account_id), fee)] if fee > 0 else []
    record = ops._txn_record(TxnType.SV_PURCHASE, req, ctx, money=-req.amount, fee=fee)
    meta: dict[str, Any] = {"txn": record, "fp": ops.fingerprint(t, req, ctx.card_id),
                            "out": {"points_earned": 0, "points_redeemed": 0}, "completes": jid}
    member = {ROLE_SV: int(ctx.sv_account_id)}
    cmd = capture(req.key, jid, req.amount, metadata=meta, legs=legs)
    outcome = await ops._post(t, req, ctx, [], meta, member, receipt, force=False, command=cmd)
    if outcome.reason is Reason.SYSTEM_ERROR and "hold" in outcome.detail:
        # Resolved meanwhile (another completion, a reversal, the sweep): say how, as above.
        state, held, due = await _hold(ops, jid)
        problem = _completion_problem(state, held, due, req.amount)
        if problem is not None:
            return await ops._decline(t, req, ctx, receipt, problem[0], problem[1], jid)
    return outcome


def _completion_problem(state: str, held: int, due: bool, amount: int) -> tuple[Reason, str] | None:
    """Why a completion of ``amount`` cannot capture a hold in ``state`` of ``held``, or None.

    >>> _completion_problem("pending", 500, False, 501)[0], _completion_problem("captured", 500, False, 5)[0]
    (<Reason.INVALID_AMOUNT: 'invalid_amount'>, <Reason.INVALID_TXN: 'invalid_txn'>)
    >>> _completion_problem("pending", 500, False, 500) is None
    True
    """
    if state != "pending":
        return Reason.INVALID_TXN, f"the pre-authorisation is {state}"
    if due:
        return Reason.INVALID_TXN, "the pre-authorisation has expired"
    if amount > held:
        return Reason.INVALID_AMOUNT, f"completion of {amount} is above the {held} held"
    return None


async def release(ops: Loyalty, req: Request, ctx: Context, receipt: OutcomeReceiptFn | None,
                  jid: int, preauth: dict[str, Any]) -> Outcome:
    """Reverse a pre-authorisation (0400/0420 naming the 0100 ``jid``): release its hold."""
    t = TxnType.REVERSAL
    for _attempt in range(2):
        state, held, _due = await _hold(ops, jid)
        if state == "captured":
            return await ops._decline(t, req, ctx, receipt, Reason.INVALID_TXN,
                                      "the pre-authorisation was completed: reverse the completion", jid)
        if state != "pending":
            return await ops._unposted(t, req, ctx, Outcome(
                Reason.APPROVED, t, detail=f"the pre-authorisation is {state} already"), receipt, jid)
        record = ops._txn_record(t, req, ctx, card_id=preauth.get("card_id"), program=preauth.get("program"),
                                 original=jid)
        meta: dict[str, Any] = {"txn": record, "fp": ops.fingerprint(t, req, ctx.card_id), "out": {}}
        outcome = await ops._post(t, req, ctx, [], meta, {}, receipt, force=False,
                                  command=void(req.key, jid, metadata=meta))
        if not (outcome.reason is Reason.SYSTEM_ERROR and "hold" in outcome.detail):
            return outcome
        # Resolved meanwhile (a completion, the sweep): look again and answer as above.
    return Outcome(Reason.SYSTEM_ERROR, t, detail=f"hold {jid} kept changing")

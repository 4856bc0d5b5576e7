"""Financial messages (0100, 0200, 0220, 0400/0420): ISO 8583 <-> the loyalty domain.

This is the only place that translates between a message and a ledger
operation (docs/design.md, Layout and dependencies). Each request becomes one :class:`ledger.loyalty.Request`
run by :class:`ledger.loyalty.operations.Loyalty`; its :class:`Outcome` becomes
the response: 39 from the outcome's reason, 37 the switch's RRN, 38 an
approval code, 48 loyalty TLVs, 54 balances. The response is built inside the
posting's transaction (a receipt), so a retransmission is answered with the
very same bytes.

>>> classify("0200", "000000"), classify("0200", "316500"), classify("0200", "026000")
(('earn', '00'), ('inquiry', '65'), ('void', '60'))
>>> classify("0200", "319900"), classify("0200", "000001")
((None, None), (None, None))
>>> balance_entry("65", "999", 1234), balance_entry("60", "156", -5)
('6502999C000000001234', '6002156D000000000005')
>>> tlv({"PE": "12", "PB": "340"})
'PE00212PB003340'
>>> parse_tlv("HT0043600PB003340"), parse_tlv("HT9"), names_preauth({"90": "0100000007" + "0" * 32})
({'HT': '3600', 'PB': '340'}, None, True)
>>> classify("0200", "406565"), parse_tlv("XP004GOLDPG003ABC")
(('exchange', '65'), {'XP': 'GOLD', 'PG': 'ABC'})
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace

from ledger.accounts import get_receipt
from ledger.loyalty import lookup
from ledger.loyalty.outcomes import Outcome, Reason, Request, TxnType
from ledger.loyalty.pins import PinError, Verdict
from specs.vocabulary import (
    APPROVED,
    FORMAT_ERROR,
    FUNCTION_NOT_SUPPORTED,
    INVALID_TRANSACTION,
    STAN,
    TERMINAL_ID,
    Fields,
    duplicate_key,
    request_key,
)
from switch import dedup, emv, logs, pinblock
from switch.context import NO_RESPONSE, RequestContext
from switch.handlers.responses import response_code
from switch.terminals import normalize_id

POINTS_CURRENCY = "999"  # specs/HOST-INTERFACE.md §7.2: points use currency code 999 in field 54
AMOUNT_TYPE_AVAILABLE = "02"

# Field 3 of a 0200, exactly, -> (transaction type, account type it concerns).
_EXACT: dict[str, tuple[TxnType, str]] = {
    "000000": (TxnType.EARN, "00"),
    "006500": (TxnType.REDEEM, "65"),
    "006000": (TxnType.SV_PURCHASE, "60"),
    "210065": (TxnType.TOPUP, "65"),
    "210060": (TxnType.LOAD, "60"),
    "906500": (TxnType.LOTTERY, "65"),
    "406565": (TxnType.EXCHANGE, "65"),
}
TARGET_PROGRAM_TAG = "XP"  # field 48 of an exchange: the program to convert into
# Field 48 of a balance inquiry's answer in a program with points expiry: the lot expiring first.
EXPIRING_POINTS_TAG, EXPIRING_ON_TAG = "EP", "ED"
# Patterned codes: type digits + account (xx) + "00".
_PATTERNED: dict[str, TxnType] = {"31": TxnType.INQUIRY, "02": TxnType.VOID, "20": TxnType.REFUND}
_ACCOUNTS = ("00", "60", "65")


def classify(mti: str, processing_code: str) -> tuple[str, str] | tuple[None, None]:
    """(transaction type, account type) of a 0200's field 3, or (None, None) if we do not offer it."""
    if mti != "0200" or len(processing_code) != 6:
        return None, None
    exact = _EXACT.get(processing_code)
    if exact is not None:
        return str(exact[0]), exact[1]
    kind = _PATTERNED.get(processing_code[:2])
    account = processing_code[2:4]
    if kind is not None and account in _ACCOUNTS and processing_code[4:] == "00":
        return str(kind), account
    return None, None


def balance_entry(account_type: str, currency: str, amount: int) -> str:
    """One 20-character field 54 entry: account type, amount type 02, currency, sign, 12 digits."""
    return f"{account_type}{AMOUNT_TYPE_AVAILABLE}{currency}{'C' if amount >= 0 else 'D'}{abs(amount):012d}"


def tlv(items: dict[str, str]) -> str:
    """Field 48: tag (2) + length (3 digits) + value, in the given order."""
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in items.items())


def parse_tlv(value: str) -> dict[str, str] | None:
    """Field 48's entries (tag, 3-digit length, value), or None when it is not such a list."""
    items: dict[str, str] = {}
    at = 0
    while at < len(value):
        head = value[at:at + 5]
        if len(head) < 5 or not (head[2:].isascii() and head[2:].isdigit()):
            return None
        end = at + 5 + int(head[2:])
        if end > len(value):
            return None
        items[head[:2]] = value[at + 5:end]
        at = end
    return items


# Field 48 tag of a 0100: the hold's life the terminal asks for, in seconds (at most 6 digits).
HOLD_TIME_TAG = "HT"
PREAUTH_MTI = "0100"
# Field 3 of a pre-authorisation and of its completion: stored value (specs/HOST-INTERFACE.md §6.1).
PREAUTH_PROCESSING_CODE = "006000"


def names_preauth(fields: Fields) -> bool:
    """Whether field 90 names a 0100 (then a 0200 006000 is that pre-authorisation's completion)."""
    return fields.get("90", "")[:4] == PREAUTH_MTI


def _response(ctx: RequestContext, outcome: Outcome) -> Fields:
    """The 0210/0410/0430 for an outcome (called inside the posting's transaction)."""
    code = response_code(outcome.reason)
    # A replay answers with the RRN the transaction was first answered with (it is on record).
    extra: Fields = {"37": outcome.rrn} if outcome.rrn else {}
    if not outcome.approved:
        return ctx.reply(code, **extra)
    # Every approval carries 38; one that posted nothing (an inquiry, a reversal of a
    # declined original) takes it from the RRN, which is just as unique and stable.
    approval = outcome.approval_code or (ctx.rrn or "")[-6:]
    if approval:
        extra["38"] = approval
    tags: dict[str, str] = {}
    if outcome.points_earned:
        tags["PE"] = str(outcome.points_earned)
    if outcome.points_redeemed:
        tags["PR"] = str(outcome.points_redeemed)
    if outcome.points_balance is not None:
        tags["PB"] = str(outcome.points_balance)
    if outcome.sv_balance_minor is not None:
        tags["SB"] = str(outcome.sv_balance_minor)
    if outcome.prize_code:
        tags["LP"] = outcome.prize_code
    if outcome.program:
        tags["PG"] = outcome.program
    if outcome.hold_s is not None:
        tags[HOLD_TIME_TAG] = str(outcome.hold_s)
    if outcome.points_expiring is not None and outcome.points_expiring_on is not None:
        tags[EXPIRING_POINTS_TAG] = str(outcome.points_expiring)
        tags[EXPIRING_ON_TAG] = outcome.points_expiring_on.strftime("%Y%m%d")
    if tags:
        extra["48"] = tlv(tags)
    # Points first, then stored value (specs/HOST-INTERFACE.md §7.2).
    entries: list[str] = []
    if outcome.points_balance is not None:
        entries.append(balance_entry("65", POINTS_CURRENCY, outcome.points_balance))
    if outcome.sv_balance_minor is not None:
        entries.append(balance_entry("60", outcome.currency or "156", outcome.sv_balance_minor))
    if entries:
        extra["54"] = "".join(entries)
    return ctx.reply(code, **extra)


async def _run(ctx: RequestContext, txn_type: TxnType, request: Request,
               declined: tuple[Reason, str] | None = None) -> Fields:
    """The domain's answer to ``request``; ``declined``: the reason (and detail) the switch declined it
    for before the domain could run it (a PIN), recorded and answered as the domain's declines are."""
    if ctx.loyalty is None:
        return ctx.reply(FUNCTION_NOT_SUPPORTED)
    # A partial, not a closure: nothing per request for the cycle collector (see Loyalty._post).
    rr = ctx.receipt(functools.partial(_response, ctx))
    if declined is None:
        outcome = await ctx.loyalty.execute(txn_type, request, receipt=rr)
    else:
        outcome = await ctx.loyalty.decline(txn_type, request, *declined, receipt=rr)
    ctx.replayed = outcome.replayed
    if outcome.stored_answer is not None:  # the answer stored for this key, as it was stored
        rr.stored = True
        return dedup.decode_payload(outcome.stored_answer)
    if outcome.reason is Reason.OUTCOME_UNKNOWN:
        ctx.log.warning("outcome_unknown", detail=outcome.detail)
        return NO_RESPONSE
    if outcome.reason is Reason.SYSTEM_ERROR:
        # The platform failed (database, timeout), not the request: operators must see it
        # at the level they run at.
        ctx.log.warning("declined", reason=str(outcome.reason), detail=outcome.detail)
    elif outcome.reason is not Reason.APPROVED and logs.enabled():
        ctx.log.info("declined", reason=str(outcome.reason), detail=outcome.detail)
    # (A 96 is never kept as the key's answer: the pipeline stores no 91/96.)
    response = rr.finish(outcome)
    if outcome.receipt_stored:
        # Stored with the journal, by reference: a retransmission is answered from the journal,
        # which records all this response says (RRN, approval code, balances after).
        rr.stored = True
    return response


def _base_request(ctx: RequestContext, account: str) -> Request:
    f = ctx.fields
    duplicate = duplicate_key(f)
    assert duplicate is not None, "validation requires fields 41, 11 and 7"
    tid, stan, transmitted = duplicate
    # The receipt key and content hash: a retransmission is recognised in the context read.
    dk = ctx.dedup_key
    return Request(
        key=request_key(tid, stan, transmitted),
        terminal_id=tid,
        merchant_id=normalize_id(f["42"]),
        pan=f["2"],
        amount=int(f["4"]),
        currency=f.get("49"),
        rrn=ctx.rrn or "",
        stan=stan,
        account=account,
        original_rrn=f.get("37", "").strip() or None,
        receipt_key=dk.idempotency_key if dk is not None else None,
        receipt_hash=dk.content_hash if dk is not None else None,
    )


# Which programme rule asks a transaction for the member's PIN (ledger.loyalty.pins).
_PIN_FOR_REDEEM = frozenset({TxnType.REDEEM, TxnType.LOTTERY})
# A pre-authorisation is where a stored-value payment is authorised: its PIN is checked there, and
# its completion (which names it) asks for none.
_PIN_FOR_SV = frozenset({TxnType.SV_PURCHASE, TxnType.PREAUTH})
# Purchases whose chip data (field 55) is kept for disputes when approved.
_CHIP_PURCHASES = frozenset({TxnType.EARN, TxnType.REDEEM, TxnType.SV_PURCHASE})
PIN_FORMAT0_FIELD = "52"  # 8 bytes: ISO 9564 format 0 under a 3DES PIN key
PIN_FORMAT4_FIELD = "110"  # 16 bytes: format 4 under an AES PIN key (longer than 52 holds)


async def _pin_answer(ctx: RequestContext, txn_type: TxnType, pan: str, merchant_id: str
                      ) -> tuple[Reason, str] | None:
    """None when the PIN (if any is needed or sent) is right; else why not (answered 55 or 75).

    The PIN block, the PIN and the keys never reach a log line: only what was decided.
    """
    f = ctx.fields
    block_hex = f.get(PIN_FORMAT0_FIELD) or f.get(PIN_FORMAT4_FIELD)
    may_need = txn_type in _PIN_FOR_REDEEM or txn_type in _PIN_FOR_SV
    if ctx.pins is None or (block_hex is None and not may_need):
        return None
    need = await ctx.pins.need(pan, merchant_id)
    if need is None or not need.has_pin:  # an unknown card is the domain's to decline; no PIN, no check
        return None
    required = ((txn_type in _PIN_FOR_REDEEM and need.required_for_redeem)
                or (txn_type in _PIN_FOR_SV and need.required_for_sv))
    if block_hex is None:
        if not required:
            return None
        return _pin_declined(ctx, Reason.PIN_INCORRECT, "PIN required and not sent")
    term = ctx.terminal
    scheme = "tdes" if PIN_FORMAT0_FIELD in f else "aes"
    if term is None or term.pin_key is None or term.pin_alg != scheme:
        # Not the member's mistake: no try is counted.
        return _pin_declined(ctx, Reason.PIN_INCORRECT, f"PIN not verifiable: the terminal has no {scheme} PIN key",
                             warn=True)
    try:
        pin = pinblock.decipher(scheme, term.pin_key, bytes.fromhex(block_hex), pan)
    except pinblock.PinBlockError:
        # Most likely enciphered under another key (a terminal that missed its new keys): not counted.
        return _pin_declined(ctx, Reason.PIN_INCORRECT, "PIN block does not decipher under the terminal's PIN key")
    key = ctx.dedup_key
    if key is not None and await get_receipt(ctx.pool, key.idempotency_key) is not None:
        # A retransmission (the domain recognises it from the same key): answered as it was the
        # first time, by the domain; its PIN is not tried again, so a wrong one counts once.
        return None
    try:
        verdict = await ctx.pins.verify(need.card_id, pin)
    except PinError as exc:
        return _pin_declined(ctx, Reason.PIN_INCORRECT, f"PIN not verifiable: {exc}", warn=True)
    if verdict is Verdict.RIGHT:
        return None
    if verdict is Verdict.WRONG:
        return _pin_declined(ctx, Reason.PIN_INCORRECT, "wrong PIN")
    return _pin_declined(ctx, Reason.PIN_TRIES_EXCEEDED, "PIN tries exceeded")


def _pin_declined(ctx: RequestContext, reason: Reason, detail: str, warn: bool = False) -> tuple[Reason, str]:
    # The decline's own line comes from _run, with this detail; a PIN the switch could not check
    # (warn: not the member's mistake) is also told at the level operators run at.
    if warn:
        ctx.log.warning("pin_not_verifiable", detail=detail)
    return reason, detail


async def _keep_chip_data(ctx: RequestContext, request: Request) -> None:
    """What a dispute needs of an approved purchase's field 55 (switch.emv.DISPUTE_TAGS)."""
    kept = emv.dispute_data(ctx.fields["55"])
    if kept:
        await ctx.pool.execute(
            "INSERT INTO loyalty.chip_data(idempotency_key, terminal_id, tags) VALUES ($1, $2, $3::jsonb) "
            "ON CONFLICT (idempotency_key) DO NOTHING", request.key, request.terminal_id, json.dumps(kept))


async def handle_0200(ctx: RequestContext) -> Fields:
    """Every 0200 we offer: purchase-earn, redeem, stored-value purchase, top-up, load,
    inquiry, void, refund, lottery, exchange (specs/HOST-INTERFACE.md §6 table)."""
    if ctx.fields.get("3") == PREAUTH_PROCESSING_CODE and names_preauth(ctx.fields):
        return await handle_completion(ctx)
    kind, account = classify(ctx.mti, ctx.fields.get("3", ""))
    if kind is None or account is None:
        return ctx.reply(FUNCTION_NOT_SUPPORTED)
    txn_type = TxnType(kind)
    request = _base_request(ctx, account)
    if txn_type in (TxnType.VOID, TxnType.REFUND) and request.original_rrn is None:
        ctx.log.info("declined", reason="void/refund without field 37 (original RRN)")
        return ctx.reply(INVALID_TRANSACTION)
    if txn_type is TxnType.EXCHANGE:
        target = (parse_tlv(ctx.fields.get("48", "")) or {}).get(TARGET_PROGRAM_TAG)
        if not target:
            ctx.log.info("declined", reason="exchange without a target program (field 48 tag XP)")
            return ctx.reply(INVALID_TRANSACTION)
        request = replace(request, target_program=target)
    pin_decline = await _pin_answer(ctx, txn_type, request.pan, request.merchant_id)
    response = await _run(ctx, txn_type, request, pin_decline)
    if "55" in ctx.fields and ctx.chip_data_kept and txn_type in _CHIP_PURCHASES \
            and response.get("39") == APPROVED:
        await _keep_chip_data(ctx, request)
    return response


async def _original_key(ctx: RequestContext) -> str | None:
    """The original's idempotency key from field 90, else the terminal's request whose STAN is our 11.

    None when field 90 is absent and no such request exists: the domain answers 25
    and leaves no marker (a marker needs the original's field 7, which we do not know).
    """
    f = ctx.fields
    tid = normalize_id(f[TERMINAL_ID])
    original = f.get("90", "")
    if len(original) >= 20 and original[:20].isascii() and original[:20].isdigit():
        return request_key(tid, original[4:10], original[10:20])  # field 90: the original's 11 and 7
    return await lookup.original_key_by_stan(ctx.pool, tid, f[STAN])


def _replacement_amount(ctx: RequestContext) -> int | None:
    """Field 95's actual amount (first 12 digits) makes a reversal partial."""
    replacement = ctx.fields.get("95", "")
    if len(replacement) >= 12 and replacement[:12].isascii() and replacement[:12].isdigit():
        return int(replacement[:12])
    return None


async def handle_reversal(ctx: RequestContext) -> Fields:
    """0400 reversal and 0420/0421 reversal advice of an earlier 0200."""
    request = replace(_base_request(ctx, "00"), original_key=await _original_key(ctx), original_rrn=None,
                      replacement_amount=_replacement_amount(ctx))
    return await _run(ctx, TxnType.REVERSAL, request)


async def handle_0100(ctx: RequestContext) -> Fields:
    """0100 pre-authorisation (006000): a hold on the member's stored value; field 48 tag HT
    may ask for the hold's life in seconds (specs/HOST-INTERFACE.md §6.1)."""
    if ctx.fields.get("3") != PREAUTH_PROCESSING_CODE:
        return ctx.reply(FUNCTION_NOT_SUPPORTED)
    hold_s: int | None = None
    if "48" in ctx.fields:
        tags = parse_tlv(ctx.fields["48"])
        asked = (tags or {}).get(HOLD_TIME_TAG, "")
        if tags is None or (HOLD_TIME_TAG in tags and not (1 <= len(asked) <= 6 and asked.isascii()
                                                          and asked.isdigit())):
            return ctx.reply(FORMAT_ERROR)
        hold_s = int(asked) if asked else None
    request = replace(_base_request(ctx, "60"), hold_timeout_s=hold_s)
    pin_decline = await _pin_answer(ctx, TxnType.PREAUTH, request.pan, request.merchant_id)
    return await _run(ctx, TxnType.PREAUTH, request, pin_decline)


async def handle_completion(ctx: RequestContext) -> Fields:
    """0200 006000 with field 90 naming a 0100, or 0220 completion advice: capture up to the
    held amount; the rest of the hold is released."""
    if ctx.fields.get("3") != PREAUTH_PROCESSING_CODE:
        return ctx.reply(FUNCTION_NOT_SUPPORTED)
    original = ctx.fields.get("90", "")
    if not (names_preauth(ctx.fields) and len(original) >= 20 and original[:20].isascii()
            and original[:20].isdigit()):
        ctx.log.info("declined", reason="completion without field 90 naming the 0100")
        return ctx.reply(INVALID_TRANSACTION)
    tid = normalize_id(ctx.fields[TERMINAL_ID])
    request = replace(_base_request(ctx, "60"), original_key=request_key(tid, original[4:10], original[10:20]))
    return await _run(ctx, TxnType.COMPLETION, request)

"""Top-up card redemption over ISO 8583: a 0200 top-up (210065) whose field 48 names a card.

Field 48 carries the card's serial (tag ``VS``) and secret code (tag ``VC``); field 4 is the card's
points, as printed on it. The points credited come from the card (``ledger.loyalty.vouchers``),
once; the answer is stored with the journal, so a retransmission gets the same bytes. The code
is never logged: the request log carries no field 48 of a request.

>>> parse_tlv("VS012000001000001VC0161234567890123456")
{'VS': '000001000001', 'VC': '1234567890123456'}
>>> parse_tlv("VS01"), parse_tlv("VS003ab"), parse_tlv("")
(None, None, {})
>>> is_voucher({"3": "210065", "48": "VS0010VC0011"}), is_voucher({"3": "210065", "48": "PG004ALLY"})
(True, False)
"""

from __future__ import annotations

from ledger.loyalty.vouchers import Redemption
from specs.vocabulary import DUPLICATE_TRANSMISSION, Fields
from switch import dedup
from switch.context import RequestContext
from switch.handlers.financial import POINTS_CURRENCY, balance_entry, tlv

SERIAL_TAG = "VS"
CODE_TAG = "VC"
TOPUP_CODE = "210065"
TLV_ENTRIES_MAX = 16

# Refusal (ledger.loyalty.vouchers.Refusal) -> field 39.
RESPONSE_CODES = {
    "locked": "75",  # tries exceeded
    "invalid": "14",  # no card with this serial and code
    "used": "05",
    "expired": "54",
    "suspended": "62",
    "not_sold": "62",
    "no_card": "14",  # the member's card (field 2) is unknown or not active
    "amount": "13",
    "error": "96",
}


def parse_tlv(text: str) -> dict[str, str] | None:
    """Field 48's entries (tag: value), or None when it is not a well-formed list (bounded)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        if len(out) >= TLV_ENTRIES_MAX or i + 5 > len(text) or not text[i + 2:i + 5].isdigit():
            return None
        length = int(text[i + 2:i + 5])
        if i + 5 + length > len(text):
            return None
        out[text[i:i + 2]] = text[i + 5:i + 5 + length]
        i += 5 + length
    return out


def is_voucher(fields: Fields) -> bool:
    """A top-up naming a card in field 48 (the router sends it here, not to the plain top-up)."""
    if fields.get("3") != TOPUP_CODE or "48" not in fields:
        return False
    tags = parse_tlv(fields["48"])
    return tags is not None and SERIAL_TAG in tags and CODE_TAG in tags


def _approved(ctx: RequestContext, points: int, program: str, balance: int | None, rrn: str | None = None) -> Fields:
    """The approval; ``rrn``: the one the first answer carried (a retransmission's), else this request's."""
    rrn = rrn or ctx.rrn
    approval = (rrn or "")[-6:]
    extra: Fields = {"38": approval} if approval else {}
    if rrn:
        extra["37"] = rrn
    tags = {"PE": str(points)} | ({"PB": str(balance)} if balance is not None else {}) | {"PG": program}
    extra["48"] = tlv(tags)
    if balance is not None:
        extra["54"] = balance_entry("65", POINTS_CURRENCY, balance)
    return ctx.reply("00", **extra)


def _answered(ctx: RequestContext, key: dedup.DedupKey, done: Redemption) -> Fields:
    """The answer to a request answered before: as it was, or 94 for other content."""
    assert done.stored is not None
    judged = dedup.judge(key, done.stored)
    if isinstance(judged, dedup.Conflict):
        ctx.log.info("declined", reason="duplicate key, different content")
        return ctx.reply(DUPLICATE_TRANSMISSION)
    if isinstance(judged, dedup.Replay):  # an answer stored whole (a decline)
        response = judged.response
    else:  # stored by reference to its journal: rebuilt from what the journal recorded
        assert done.program is not None
        response = _approved(ctx, done.points, done.program, done.points_balance, done.answered_rrn)
    ctx.replayed = True
    ctx.receipt(lambda _res: response).stored = True  # stored already: the pipeline keeps it
    return response


async def handle(ctx: RequestContext) -> Fields:
    """Redeem the card of field 48 for the card of field 2 at this terminal's merchant."""
    # Imported here: the ledger's card module is only needed on this path.
    from ledger.engine import ReceiptRef
    from ledger.loyalty import card_numbers, vouchers
    from ledger.loyalty.outcomes import Channel

    desk = ctx.vouchers
    if desk is None or ctx.loyalty is None:  # no master key configured: no card can be checked
        return ctx.reply("40")
    tags = parse_tlv(ctx.fields["48"]) or {}
    terminal_id = ctx.fields["41"].strip()
    try:
        pan_hash = await ctx.loyalty.card_hash(ctx.fields["2"])
    except card_numbers.CardVaultError as exc:
        ctx.log.error("card keys", error=str(exc))
        return ctx.reply(RESPONSE_CODES["error"])
    who = vouchers.Subjects(terminal_id=terminal_id)  # and the card's member, found with the card
    key = ctx.dedup_key
    # The answer is kept by reference to the journal (one statement posts both) and rebuilt from
    # the journal for a retransmission: its RRN, the points, the balance after.
    ref = ReceiptRef(key.idempotency_key, key.content_hash) if key is not None else None
    done = await vouchers.redeem(
        ctx.ledger, ctx.pool, desk.master_key, tags[SERIAL_TAG], tags[CODE_TAG], None, who, desk.policy,
        channel=Channel.TERMINAL, merchant_id=ctx.fields["42"].strip(), terminal_id=terminal_id, rrn=ctx.rrn,
        stan=ctx.fields["11"], expect_points=int(ctx.fields["4"]), receipt_ref=ref, pan_hash=pan_hash,
        reader=desk.reader)
    if done.refusal is vouchers.Refusal.ANSWERED and key is not None:
        return _answered(ctx, key, done)
    if done.refusal is not None:
        ctx.log.info("declined", reason=f"voucher {done.refusal}")
        return ctx.reply(RESPONSE_CODES[str(done.refusal)])
    assert done.program is not None
    response = _approved(ctx, done.points, done.program, done.points_balance)
    if key is not None and not done.replayed:
        ctx.receipt(lambda _res: response).stored = True  # kept with the journal, by reference
    # A card this same card redeemed before (another request): today's balance; the pipeline keeps it.
    return response
